"""The paper's loss and metric: cross-entropy and mean IoU that both ignore label 255."""

import keras

from synergyseg.data.info import IGNORE_LABEL

# Output names of a `scale_outputs=True` model that get a loss when the auxiliary loss is on.
AUX_OUTPUTS = ("s_lo", "s_hi")


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


def compile_arguments(num_classes, aux_loss_weight=0.0):
    """`loss`, `loss_weights` and `metrics` for `model.compile`.

    With `aux_loss_weight == 0` (the paper) the model has one output and one loss. Otherwise it
    has the dict outputs "fused", "s_lo", "s_hi" (see `training_model`) and each scale's own
    prediction adds `aux_loss_weight` times its cross-entropy.
    """
    if not aux_loss_weight:
        return {"loss": segmentation_loss(), "metrics": [mean_iou(num_classes)]}
    names = ("fused",) + AUX_OUTPUTS
    return {
        "loss": {name: segmentation_loss() for name in names},
        "loss_weights": {name: 1.0 if name == "fused" else aux_loss_weight for name in names},
        "metrics": {"fused": [mean_iou(num_classes)]},
    }
