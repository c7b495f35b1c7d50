"""Learning-rate schedules: the paper's polynomial decay, with an optional linear warm-up."""

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
        decay_steps: steps of the whole run; the rate reaches `end_learning_rate` there.
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
        if decay_steps < 1:
            raise ValueError(f"decay_steps={decay_steps}: expected >= 1")
        if not 0 <= self.warmup_steps <= decay_steps:
            raise ValueError(f"warmup_steps={self.warmup_steps}: expected 0..decay_steps ({decay_steps})")
        self.decay_steps = decay_steps
        self.decay = keras.optimizers.schedules.PolynomialDecay(
            self.learning_rate, decay_steps, end_learning_rate=self.end_learning_rate, power=self.power)

    def __call__(self, step):
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
