"""The paper's recipe: cross-entropy and mean IoU that ignore label 255, SGD with polynomial decay.

`SynergySeg.compile()` with no arguments and train.py's runs both take it from here.
"""

import keras

from synergyseg.data.info import IGNORE_LABEL
from synergyseg.models.names import FUSED, LOSS_OUTPUTS
from synergyseg.training.schedules import WarmupPolynomialDecay

# Section IV of the paper: SGD, momentum 0.9, weight decay 5e-4, lr 0.01 with poly decay (0.9).
LEARNING_RATE = 0.01
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
POLY_POWER = 0.9


def segmentation_loss():
    """Pixel-wise cross-entropy on probabilities; pixels labelled 255 add nothing.

    Keras drops ignored pixels from both the sum and the count, so the loss is the mean over
    labelled pixels (as PyTorch's `CrossEntropyLoss(ignore_index=255)`).
    """
    return keras.losses.SparseCategoricalCrossentropy(
        from_logits=False, ignore_class=IGNORE_LABEL, name="cross_entropy")


def mean_iou(num_classes, name="mean_iou"):
    """Keras's MeanIoU over argmax of the probabilities; pixels labelled 255 are not counted."""
    return keras.metrics.MeanIoU(
        num_classes, ignore_class=IGNORE_LABEL, sparse_y_true=True, sparse_y_pred=False, name=name)


def make_optimizer(decay_steps, learning_rate=LEARNING_RATE, end_learning_rate=0.0, power=POLY_POWER,
                   warmup_steps=0, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, clipnorm=None):
    """SGD with momentum, decoupled weight decay and the polynomial (warm-up) schedule.

    Keras applies `weight_decay` as `w -= lr * weight_decay * w` before each momentum update
    (decoupled, tested against numpy); the paper's frameworks add `weight_decay * w` to the
    gradient (L2), which then also flows through the momentum buffer. Batch-norm scales/offsets and biases are decayed too, as in
    the paper's frameworks with default settings.
    """
    schedule = WarmupPolynomialDecay(learning_rate, decay_steps, end_learning_rate=end_learning_rate,
                                     power=power, warmup_steps=warmup_steps)
    return sgd(schedule, momentum=momentum, weight_decay=weight_decay, clipnorm=clipnorm)


def sgd(schedule, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, clipnorm=None):
    """Keras's SGD with momentum and decoupled weight decay on `schedule` (see `make_optimizer`)."""
    return keras.optimizers.SGD(schedule, momentum=momentum, weight_decay=weight_decay or None,
                                clipnorm=clipnorm)


def compile_arguments(num_classes, aux_loss_weight=0.0, dict_outputs=None):
    """`loss`, `loss_weights` and `metrics` for `model.compile`.

    With `aux_loss_weight == 0` (the paper) the loss is on the fused map only. Otherwise the
    model has the dict outputs "fused", "s_lo", "s_hi" (see `training_model`) and each scale's own
    prediction adds `aux_loss_weight` times its cross-entropy. `dict_outputs` (default: whether
    `aux_loss_weight` is set) says whether the model returns a dict.
    """
    if dict_outputs is None:
        dict_outputs = bool(aux_loss_weight)
    if not dict_outputs:
        return {"loss": segmentation_loss(), "metrics": [mean_iou(num_classes)]}
    weights = loss_weights(aux_loss_weight)
    return {
        "loss": {name: segmentation_loss() for name in weights},
        "loss_weights": weights,
        "metrics": {FUSED: [mean_iou(num_classes)]},
    }


def loss_weights(aux_loss_weight):
    """`{output: weight}` of the dict outputs that get a loss: "fused" 1, and with
    `aux_loss_weight` set, "s_lo" and "s_hi" that weight."""
    names = LOSS_OUTPUTS if aux_loss_weight else (FUSED,)
    return {name: 1.0 if name == FUSED else aux_loss_weight for name in names}


def output_loss(aux_loss_weight=0.0):
    """`loss(labels, prediction)` for a custom training loop, the loss `compile_arguments` gives
    Keras: cross-entropy on the prediction, or on a dict prediction's "fused" map plus
    `aux_loss_weight` times that of each scale's ("s_lo", "s_hi"). Each term is a Keras mean loss,
    so under a strategy each is divided by the replica count (see `distribute.train_multi_worker`).
    """
    loss, weights = segmentation_loss(), loss_weights(aux_loss_weight)

    def total(labels, prediction):
        if not isinstance(prediction, dict):
            return loss(labels, prediction)
        return sum(weight * loss(labels, prediction[name]) for name, weight in weights.items())

    return total


def paper_compile_arguments(num_classes, decay_steps=None, dict_outputs=False):
    """`(compile arguments, schedule)`: `optimizer`, `loss` and `metrics` of the paper's recipe (see
    `SynergySeg.compile`), and the optimizer's learning-rate schedule.

    With `decay_steps=None` the schedule has no length yet: `SynergySeg.fit` sets it from its
    epochs and Keras's own count of steps per epoch before the first step (`schedules.DecayLength`),
    and it is saved with the model as unset until then.
    """
    arguments = compile_arguments(num_classes, dict_outputs=dict_outputs)
    arguments.pop("loss_weights", None)
    schedule = WarmupPolynomialDecay(LEARNING_RATE, decay_steps, power=POLY_POWER)
    arguments["optimizer"] = sgd(schedule)
    return arguments, schedule
