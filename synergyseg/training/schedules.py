"""Learning-rate schedules: the paper's polynomial decay, with an optional linear warm-up, and the
check that a fit stays inside its decay."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="synergyseg")
class WarmupPolynomialDecay(keras.optimizers.schedules.LearningRateSchedule):
    """`keras.optimizers.schedules.PolynomialDecay`, preceded by a linear warm-up.

    For `step < warmup_steps` the rate rises linearly from `learning_rate * warmup_start`
    to the decayed rate at `warmup_steps`; afterwards it is exactly
    `(lr - end_lr) * (1 - step / decay_steps) ** power + end_lr` (Keras's PolynomialDecay).

    Args:
        learning_rate: rate at step 0 of the decay (the paper: 0.01).
        decay_steps: steps of the whole run; the rate reaches `end_learning_rate` there. None:
            not known yet (`SynergySeg.compile()` without decay_steps); the next `SynergySeg.fit`
            sets it, and the rate cannot be read before (it raises rather than guess).
        end_learning_rate: final rate (the paper: 0).
        power: exponent of the decay (0.9 as in DeepLab and the paper's frameworks).
        warmup_steps: steps of linear warm-up (0 = none).
        warmup_start: fraction of the rate the warm-up starts from.

    Example:
        >>> lr = WarmupPolynomialDecay(0.01, decay_steps=1000, warmup_steps=50)
        >>> keras.optimizers.SGD(lr, momentum=0.9)
    """

    def __init__(self, learning_rate, decay_steps, end_learning_rate=0.0, power=0.9,
                 warmup_steps=0, warmup_start=0.1, name="warmup_polynomial_decay"):
        self.learning_rate = learning_rate
        self.end_learning_rate = end_learning_rate
        self.power = power
        self.warmup_steps = warmup_steps
        self.warmup_start = warmup_start
        self.name = name
        self.set_decay_steps(decay_steps)

    def set_decay_steps(self, decay_steps):
        """Sets the run's length; only before the first training step (the rate is traced then)."""
        if decay_steps is None:
            self.decay_steps, self.decay = None, None
            return
        if decay_steps < 1:
            raise ValueError(f"decay_steps={decay_steps}: expected >= 1")
        if not 0 <= self.warmup_steps <= decay_steps:
            raise ValueError(f"warmup_steps={self.warmup_steps}: expected 0..decay_steps ({decay_steps})")
        self.decay_steps = decay_steps
        self.decay = keras.optimizers.schedules.PolynomialDecay(
            self.learning_rate, decay_steps, end_learning_rate=self.end_learning_rate, power=self.power)

    def __call__(self, step):
        if self.decay_steps is None:
            raise ValueError(
                "WarmupPolynomialDecay has no decay_steps yet: SynergySeg.fit sets it from its epochs "
                "and steps per epoch (compile() without decay_steps); to train otherwise, pass "
                "decay_steps= (the run's total steps) to compile() or to the schedule")
        step = ops.cast(step, "float32")
        decayed = self.decay(step)
        if not self.warmup_steps:
            return decayed
        fraction = step / self.warmup_steps
        warm = self.decay(float(self.warmup_steps)) * (
            self.warmup_start + (1.0 - self.warmup_start) * fraction)
        return ops.where(step < self.warmup_steps, warm, decayed)

    def get_config(self):
        return {
            "learning_rate": self.learning_rate,
            "decay_steps": self.decay_steps,
            "end_learning_rate": self.end_learning_rate,
            "power": self.power,
            "warmup_steps": self.warmup_steps,
            "warmup_start": self.warmup_start,
            "name": self.name,
        }


def decay_schedule(optimizer):
    """The `WarmupPolynomialDecay` driving `optimizer`'s learning rate (a loss-scale wrapper's too),
    or None for an optimizer without one."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer (mixed precision)
    schedule = getattr(inner, "_learning_rate", None)
    return schedule if isinstance(schedule, WarmupPolynomialDecay) else None


class DecayLength(keras.callbacks.Callback):
    """Keeps a fit inside its polynomial decay: sizes a decay that has no length yet, refuses a fit
    that would run past its end (the rate would be `end_learning_rate`, 0 in the paper's recipe).

    Reads the fit's own count of steps per epoch (`params["steps"]`: what Keras's data adapter
    gives for arrays, dicts of arrays, tf.data, PyDataset, generators) at the start of training,
    after the train function is made and before its first step traces the rate. A fit of unknown
    length is checked before each step instead.

    Args:
        schedule: the optimizer's `WarmupPolynomialDecay`.
        initial_epoch: the fit's `initial_epoch`.
    """

    def __init__(self, schedule, initial_epoch=0):
        super().__init__()
        self.schedule = schedule
        self.initial_epoch = initial_epoch
        self._check_each_step = False

    def _iterations(self):
        iterations = getattr(self.model.optimizer, "inner_optimizer", self.model.optimizer).iterations
        # Under tf.distribute the variable is a MirroredVariable, which int() refuses: read its value.
        return int(keras.ops.convert_to_numpy(keras.ops.convert_to_tensor(iterations)))

    def on_train_begin(self, logs=None):
        steps, epochs = self.params.get("steps"), self.params.get("epochs", 1)
        # keras.callbacks.BackupAndRestore sets the model's _initial_epoch in its on_train_begin
        # (this callback runs after it); fit reads it the same way.
        initial_epoch = getattr(self.model, "_initial_epoch", None) or self.initial_epoch
        done = self._iterations()
        if steps is None:
            if self.schedule.decay_steps is None:
                raise ValueError(
                    "compile() without decay_steps: fit() needs the number of steps, and this input's "
                    "length is unknown (a generator, or a dataset of unknown or infinite size), so "
                    "pass steps_per_epoch= to fit() or decay_steps= to compile()")
            self._check_each_step = True
            return
        end = done + max(epochs - initial_epoch, 0) * steps
        if self.schedule.decay_steps is None:
            if end > 0:
                self.schedule.set_decay_steps(end)
            return
        if end > self.schedule.decay_steps:
            raise ValueError(past_the_decay(self.schedule, done, end))

    def on_train_batch_begin(self, batch, logs=None):
        if self._check_each_step and self._iterations() >= self.schedule.decay_steps:
            raise ValueError(past_the_decay(self.schedule, self._iterations(), None))


def past_the_decay(schedule, done, end):
    """The refusal of a fit that would train after `schedule`'s decay ended, with the ways out."""
    runs = f"steps {done + 1}..{end}" if end is not None else f"on from step {done + 1}"
    return (
        f"this fit would train {runs}, but the learning rate's polynomial decay ends at step "
        f"{schedule.decay_steps} (the rate stays {schedule.end_learning_rate:g} after it). To train again, "
        "call model.compile() first (the next fit sizes a new decay) or compile(decay_steps=<total "
        "steps>); to resume a run, fit with its epochs and initial_epoch= the epochs it finished")
