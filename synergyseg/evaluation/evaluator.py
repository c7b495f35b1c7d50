"""One pass over a validation set: confusion matrices for the model and every ablated fusion."""

import keras
import tensorflow as tf

from synergyseg.data import eval_dataset
from synergyseg.data.pipeline import list_files
from synergyseg.evaluation.confusion import ConfusionMatrix
from synergyseg.evaluation.predictor import UNCERTAINTY_KEY


def _filenames(files, batch_size, limit):
    """The `image/filename` of each record, batched like `eval_dataset` (same files, same order)."""
    spec = {"image/filename": tf.io.FixedLenFeature((), tf.string, default_value="")}
    ds = tf.data.TFRecordDataset(files)
    if limit is not None:
        ds = ds.take(limit)
    # Only the small filename field is parsed; images are decoded once, by eval_dataset.
    return ds.map(lambda r: tf.io.parse_single_example(r, spec)["image/filename"]).batch(batch_size)


def validation_batches(file_pattern, batch_size=1, *, resize_factor=None, label_map=None, limit=None):
    """`(image, label, filename)` batches: `synergyseg.data.eval_dataset` plus each record's file name.

    File names name the Cityscapes result files; images keep the order of `file_pattern`'s sorted
    files. Labels stay at full size whatever `resize_factor` is.
    """
    files = list_files(file_pattern)
    images_labels = eval_dataset(files, batch_size, resize_factor=resize_factor, label_map=label_map,
                                 limit=limit)
    return tf.data.Dataset.zip(images_labels, _filenames(files, batch_size, limit)).map(
        lambda pair, name: (pair[0], pair[1], name))


def evaluate_batches(predictor, batches, num_classes, *, visitors=(), progress=True, total=None):
    """Scores `predictor` on `batches` and returns `{key: ConfusionMatrix}` for each of its outputs.

    Args:
        predictor: a `synergyseg.evaluation.Predictor` (the model and the fusions to ablate).
        batches: iterable of `(images, labels)` or `(images, labels, filenames)`; labels at full
            resolution, 255 = ignore.
        num_classes: number of scored classes.
        visitors: callables `visitor(images, labels, predictions, filenames)` called on every
            batch with numpy arrays (`predictions` = the predictor's dict), e.g. to keep images for
            figures or write Cityscapes result files in the same pass.
        progress: show a Keras progress bar.
        total: number of batches, for the progress bar (None = unknown).
    """
    matrices = {key: ConfusionMatrix(num_classes) for key in predictor.keys}
    bar = keras.utils.Progbar(total, unit_name="batch") if progress else None
    for step, batch in enumerate(batches, 1):
        images, labels = batch[0], batch[1]
        filenames = [f.decode() for f in batch[2].numpy()] if len(batch) > 2 else None
        predictions = predictor(images, tf.shape(labels)[1:3])
        labels = labels.numpy() if hasattr(labels, "numpy") else labels
        for key in predictor.keys:
            matrices[key].update(labels, predictions[key])
        for visit in visitors:
            visit(images.numpy() if hasattr(images, "numpy") else images, labels, predictions, filenames)
        if bar is not None:
            bar.update(step)
    if not any(m.matrix.any() for m in matrices.values()):
        raise ValueError("the validation data held no scored pixels (every label is 255 or there are no images)")
    return matrices


class ExampleCollector:
    """A visitor that keeps the first `count` images with label, prediction and uncertainty mask."""

    def __init__(self, count):
        self.count = count
        self.examples = []

    def __call__(self, images, labels, predictions, filenames):
        for i in range(images.shape[0]):
            if len(self.examples) >= self.count:
                return
            self.examples.append({
                "image": images[i],
                "label": labels[i],
                "prediction": predictions["model"][i],
                "uncertainty": predictions[UNCERTAINTY_KEY][i] if UNCERTAINTY_KEY in predictions else None,
                "filename": filenames[i] if filenames else f"image {len(self.examples)}",
            })
