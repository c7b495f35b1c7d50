"""A streaming confusion matrix over full-resolution label maps, and the IoU scores read from it."""

import dataclasses

import numpy as np
import tensorflow as tf

from synergyseg.data.info import IGNORE_LABEL


@tf.function(reduce_retracing=True)
def _batch_counts(labels, predictions, num_classes):
    """(num_classes, num_classes) int32 counts of (label, prediction) pairs, and the largest label."""
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    predictions = tf.reshape(tf.cast(predictions, tf.int32), [-1])
    scored = tf.not_equal(labels, IGNORE_LABEL)
    labels = tf.boolean_mask(labels, scored)
    predictions = tf.boolean_mask(predictions, scored)
    # A label >= num_classes is a wrong label map, not a class to drop: report it instead of
    # letting bincount fold it into another cell.
    largest = tf.reduce_max(tf.concat([labels, [-1]], 0))
    in_range = tf.logical_and(labels < num_classes, predictions < num_classes)
    pairs = tf.boolean_mask(labels * num_classes + predictions, in_range)
    size = num_classes * num_classes
    counts = tf.math.bincount(pairs, minlength=size, maxlength=size, dtype=tf.int32)
    return tf.reshape(counts, [num_classes, num_classes]), largest, tf.reduce_max(predictions)


class ConfusionMatrix:
    """Counts (label, prediction) pixel pairs over a whole dataset, skipping label 255.

    Rows are labels, columns predictions. Each batch is counted on the device in int32 and
    added to an int64 total, so a full validation set at 1024x2048 cannot overflow.

    Example:
        >>> cm = ConfusionMatrix(19)
        >>> cm.update(labels, predictions)        # (B, H, W) ints, labels may hold 255
        >>> cm.scores().mean_iou
    """

    def __init__(self, num_classes):
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.matrix = np.zeros((self.num_classes, self.num_classes), np.int64)
        self.images = 0

    def update(self, labels, predictions):
        """Adds a batch: `labels` and `predictions` of one shape, ints; labels 255 are skipped."""
        if tuple(labels.shape) != tuple(predictions.shape):
            raise ValueError(
                f"labels {tuple(labels.shape)} and predictions {tuple(predictions.shape)} differ in "
                "shape; predictions must be resized to the label's size before scoring")
        counts, largest, largest_pred = _batch_counts(labels, predictions, tf.constant(self.num_classes))
        if int(largest) >= self.num_classes:
            raise ValueError(
                f"label value {int(largest)} is neither a class id (0..{self.num_classes - 1}) nor "
                f"the ignore value {IGNORE_LABEL}; is the label map (train ids) right for this dataset?")
        if int(largest_pred) >= self.num_classes:
            raise ValueError(f"prediction {int(largest_pred)} is not a class id (0..{self.num_classes - 1})")
        self.matrix += counts.numpy().astype(np.int64)
        self.images += int(labels.shape[0]) if len(labels.shape) == 3 else 1

    def scores(self):
        """The `Scores` (IoU per class, mIoU, pixel accuracy) of the counts so far."""
        return scores_from_confusion(self.matrix)


@dataclasses.dataclass(frozen=True)
class Scores:
    """IoU scores of a confusion matrix.

    Attributes:
        iou: (C,) float64, TP / (TP + FP + FN); NaN for a class absent from both labels and
            predictions (TP + FP + FN == 0), which has no IoU rather than 0 or 1.
        mean_iou: mean of `iou` over the present classes (NaN if none is present).
        pixel_accuracy: correctly predicted scored pixels / scored pixels.
        pixels: scored pixels counted.
        present: (C,) bool, the classes that have an IoU.
    """

    iou: np.ndarray
    mean_iou: float
    pixel_accuracy: float
    pixels: int
    present: np.ndarray


def scores_from_confusion(matrix):
    """`Scores` of a (C, C) confusion matrix with rows = labels and columns = predictions."""
    matrix = np.asarray(matrix, np.int64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"confusion matrix must be square (C, C), got shape {matrix.shape}")
    tp = np.diag(matrix)
    union = matrix.sum(0) + matrix.sum(1) - tp  # TP + FP + FN
    present = union > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(present, tp / np.maximum(union, 1), np.nan)
    pixels = int(matrix.sum())
    return Scores(
        iou=iou,
        mean_iou=float(np.mean(iou[present])) if present.any() else float("nan"),
        pixel_accuracy=float(tp.sum()) / pixels if pixels else float("nan"),
        pixels=pixels,
        present=present,
    )
