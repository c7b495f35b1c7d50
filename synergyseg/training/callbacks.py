"""Callbacks the training run adds to Keras's own: per-class IoU, validation images, safe saving."""

import os
import re

import keras
import numpy as np
import tensorflow as tf

from synergyseg.training.curves import plot_training_curves
from synergyseg.data.info import colorize
from synergyseg.evaluation.confusion import scores_from_confusion
from synergyseg.models.names import FUSED, UNCERTAINTY
from synergyseg.run_folder import check_finite


def find_mean_iou(model):
    """The compiled `keras.metrics.MeanIoU` of `model` (after at least one train/eval step)."""
    pending = list(model.metrics)
    while pending:
        metric = pending.pop(0)
        if isinstance(metric, keras.metrics.MeanIoU):
            return metric
        pending.extend(getattr(metric, "metrics", []) or [])
    raise ValueError(f"Model {model.name!r} was not compiled with a keras.metrics.MeanIoU")


def iou_per_class(confusion):
    """IoU of each class from a (true, predicted) confusion matrix; NaN for a class never seen."""
    return scores_from_confusion(confusion).iou


def log_name(class_name):
    """A class name as a log key: lower case, runs of other characters -> "_"."""
    return re.sub(r"[^0-9a-z]+", "_", class_name.lower()).strip("_")


class PerClassIoU(keras.callbacks.Callback):
    """Adds `val_iou_<class>` (or `iou_<class>` without validation) to each epoch's logs.

    Reads the confusion matrix the compiled MeanIoU already accumulated, so it costs no extra
    pass: after `fit` validates, the metric holds the validation counts. Put it before
    CSVLogger and TensorBoard in the callback list so they record its values.
    """

    def __init__(self, class_names):
        super().__init__()
        self.class_names = list(class_names)
        # The last validation's confusion matrix and its epoch: the run's final scores need no
        # second pass over the validation set.
        self.val_confusion, self.val_epoch = None, None

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        metric = find_mean_iou(self.model)
        if metric.num_classes != len(self.class_names):
            raise ValueError(
                f"PerClassIoU has {len(self.class_names)} class names for a MeanIoU of "
                f"{metric.num_classes} classes")
        validated = any(k.startswith("val_") for k in logs)
        confusion = metric.total_cm.numpy()
        if validated:
            self.val_confusion, self.val_epoch = confusion, epoch
        prefix = "val_iou_" if validated else "iou_"
        for name, iou in zip(self.class_names, iou_per_class(confusion)):
            logs[prefix + log_name(name)] = float(iou)


class AliasLogs(keras.callbacks.Callback):
    """Copies log entries to other names, e.g. `val_fused_mean_iou` -> `val_mean_iou`.

    With the auxiliary loss the model has dict outputs and Keras prefixes the metric with the
    output's name; the alias keeps `val_mean_iou` the one name to monitor.
    """

    def __init__(self, aliases):
        super().__init__()
        self.aliases = dict(aliases)

    def on_epoch_end(self, epoch, logs=None):
        for source, target in self.aliases.items():
            for prefix in ("", "val_"):
                if logs is not None and prefix + source in logs:
                    logs[prefix + target] = logs[prefix + source]


class LogLearningRate(keras.callbacks.Callback):
    """Adds the optimizer's current learning rate to each epoch's logs as `learning_rate`."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class TerminateOnNaN(keras.callbacks.TerminateOnNaN):
    """Keras's TerminateOnNaN that raises an error saying which step failed, what to try, and
    where the last good state is (`backup`: the run's `RunBackup`).

    At each epoch end it also checks every variable of the backup's state, batch-norm statistics
    included (a finite loss does not prove them finite): put it before every callback that
    writes a model file, so none is written from a diverged epoch.
    """

    def __init__(self, backup=None):
        super().__init__(raise_error=True)
        self.backup = backup

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            step = int(self.model.optimizer.iterations.numpy())
            where = self.backup.describe() if self.backup is not None else ""
            raise FloatingPointError(
                f"Training loss became {float(loss)} at step {step} (batch {batch}); stopping. "
                "Try a lower learning_rate, --clipnorm 1.0, a warm-up (--warmup-steps), or "
                f"training without --mixed-precision, in a new --run-dir. {where}".rstrip())

    def on_epoch_end(self, epoch, logs=None):
        if self.backup is not None:
            self.backup.check_finite(epoch + 1)


class EpochBackup(keras.callbacks.Callback):
    """Commits the run's state and the epoch's logs to a `RunBackup` at each epoch end.

    Replaces BackupAndRestore and CSVLogger: one atomic commit holds the weights, the epoch count
    and the history rows, so history.csv and the backup agree whatever instant a kill comes.
    Put it after every callback that adds to the logs, and after the best-model checkpoint (a
    kill between the two then redoes the epoch, which writes the same best model again).
    """

    def __init__(self, backup):
        super().__init__()
        self.backup = backup

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch}
        row.update({k: float(v) for k, v in (logs or {}).items()})
        self.backup.save(epoch + 1, self.backup.rows + [row])


class BestByScore(keras.callbacks.Callback):
    """Scores the model after each epoch into `logs[key]`, calling `save` when the score is the best.

    For training loops where Keras cannot validate (the multi-worker step): `score` returns a
    number (e.g. the validation mean IoU of a single-process copy), `save` writes the best model.
    Put it before `EpochBackup` so the backup's history row holds the score.
    """

    def __init__(self, score, save, key="val_mean_iou", best=None):
        super().__init__()
        self.score, self.save, self.key = score, save, key
        self.best = -np.inf if best is None else best

    def on_epoch_end(self, epoch, logs=None):
        value = float(self.score())
        if logs is not None:
            logs[self.key] = value
        if value > self.best:
            self.best = value
            self.save()


class SafeModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """Keras's ModelCheckpoint that never leaves a half-written file at `filepath`.

    Keras writes the file in place; here it writes `<name>.partial.keras` and renames it over
    `filepath` (atomic on one file system), so a run killed while saving keeps the previous
    best model. A model with a NaN or infinite variable is never renamed into place (an error). Takes ModelCheckpoint's arguments, and `saved_model`: the model to write if not
    the one being fitted (a run with auxiliary losses fits a three-output model but serves the
    single-output one that shares its weights).
    """

    def __init__(self, filepath, saved_model=None, **kwargs):
        root, ext = os.path.splitext(filepath)
        self.final_path = filepath
        self.saved_model = saved_model
        super().__init__(f"{root}.partial{ext}", **kwargs)

    def set_model(self, model):
        super().set_model(model if self.saved_model is None else self.saved_model)

    def _commit(self):
        if os.path.exists(self.filepath):
            try:
                check_finite(self.model, self.final_path)
            except ValueError:
                os.remove(self.filepath)
                raise
            os.replace(self.filepath, self.final_path)

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        self._commit()

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        self._commit()


class ValidationImages(keras.callbacks.Callback):
    """Writes image, label, prediction and uncertainty mask of a few validation images to TensorBoard.

    Args:
        images, labels: numpy batches (N, H, W, 3) float in [0, 255] and (N, H, W) ids.
        colors: RGB tuple per class (`DatasetInfo.colors`).
        log_dir: TensorBoard directory (a subfolder "images" is written).
        scale_model: a model sharing the trained weights with dict outputs "fused" and
            "uncertainty" (`synergyseg.with_fusion(model, scale_outputs=True)`).
    """

    def __init__(self, images, labels, colors, log_dir, scale_model):
        super().__init__()
        self.images = np.asarray(images, np.float32)
        self.labels = np.asarray(labels)
        self.colors = colors
        self.log_dir = os.path.join(log_dir, "images")
        self.scale_model = scale_model
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        outputs = self.scale_model.predict(self.images, batch_size=1, verbose=0)
        prediction = np.argmax(outputs[FUSED], axis=-1)
        panels = {
            "image": self.images.clip(0, 255).astype(np.uint8),
            "label": colorize(self.labels, self.colors),
            "prediction": colorize(prediction, self.colors),
            "uncertainty": outputs[UNCERTAINTY].astype(np.float32),
        }
        with self._writer.as_default(step=epoch + 1):
            for name, batch in panels.items():
                tf.summary.image(f"validation/{name}", batch, max_outputs=len(self.images))
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class TrainingCurves(keras.callbacks.Callback):
    """Draws `history_csv` (the CSVLogger file, all resumed parts) to `png_path` when training ends."""

    def __init__(self, history_csv, png_path):
        super().__init__()
        self.history_csv = history_csv
        self.png_path = png_path

    def on_train_end(self, logs=None):
        if os.path.exists(self.history_csv):
            plot_training_curves(self.history_csv, self.png_path)
