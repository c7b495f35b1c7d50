"""`Segmenter`: segment your own pictures with a trained model in any of its saved forms.

    import synergyseg
    segmenter = synergyseg.Segmenter("runs/synthetic")        # or best.keras, saved_model/, .tflite
    result = segmenter.predict("street.jpg")                  # class map at the picture's size
    result.class_map, result.uncertainty                      # (H, W) uint8, (H, W) float32
    picture = segmenter.overlay("street.jpg", result.class_map, opacity=0.5)

An export may serve only some outputs (`export_model(outputs=...)`): without "probabilities" its
"class_map" is the class map (resized nearest-neighbour to the picture's size where the model
ran at another), and options that need probabilities are refused; without "uncertainty",
`result.uncertainty` is None.
"""

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf

from synergyseg.data.info import colorize
from synergyseg.export.metadata import metadata_path, read_metadata
from synergyseg.export.serving import CLASS_MAP, PROBABILITIES
from synergyseg.models.names import UNCERTAINTY
from synergyseg.predict import io
from synergyseg.predict.runners import KerasRunner, SavedModelRunner, TFLiteRunner
from synergyseg.run_folder import RUN_CHECKPOINTS, check_finite, class_info, load_model

SAVED_MODEL_FILE = "saved_model.pb"
# An export folder (synergyseg.export) holds its SavedModel under this name.
EXPORT_SAVED_MODEL = "saved_model"
# The largest resize factor accepted: beyond it the model sees upsampled blur and memory explodes.
MAX_RESIZE_FACTOR = 4.0


@dataclasses.dataclass
class Segmentation:
    """One picture's prediction, at the picture's own size.

    Attributes:
        class_map: (H, W) class ids (train ids 0..num_classes-1), uint8 up to 256 classes.
        uncertainty: (H, W) float32 in [0, 1], the low scale's uncertainty mask (two-scale
            models and exports that serve it only, else None).
        probabilities: (H, W, num_classes) float32 fused probabilities, when asked for.
    """

    class_map: np.ndarray
    uncertainty: np.ndarray | None = None
    probabilities: np.ndarray | None = None


def generic_palette(num_classes):
    """Evenly spread hues for a model that carries no colours (as evaluation does for unknown data)."""
    from synergyseg.evaluation.loading import generic_info

    info = generic_info(num_classes)
    return list(info.class_names), [list(c) for c in info.colors]


def _resolve(path):
    """`(form, path)`: "keras" (a .keras file or run folder), "saved_model" or "tflite"."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Model {path!r} does not exist (expected a run folder, a .keras "
                                "file, a SavedModel folder or a .tflite file)")
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, SAVED_MODEL_FILE)):
            return "saved_model", path
        if any(os.path.isfile(os.path.join(path, name)) for name in RUN_CHECKPOINTS):
            return "keras", path
        nested = os.path.join(path, EXPORT_SAVED_MODEL)
        if os.path.isfile(os.path.join(nested, SAVED_MODEL_FILE)):
            return "saved_model", nested
        raise FileNotFoundError(
            f"Folder {path!r} holds no model: expected a run folder ({' or '.join(RUN_CHECKPOINTS)}), "
            f"a SavedModel ({SAVED_MODEL_FILE}) or an export folder ({EXPORT_SAVED_MODEL}/)")
    if path.endswith(".keras"):
        return "keras", path
    if path.endswith(".tflite"):
        return "tflite", path
    raise ValueError(f"Model file {path!r} is neither a .keras nor a .tflite file")


class Segmenter:
    """A trained segmentation model, ready for pictures: class maps at each picture's size.

    Loads from a train.py run folder (best.keras, else final.keras), a `.keras` file, an
    exported SavedModel folder (or the export folder holding it) or an exported `.tflite` file.
    Class names and colours come with the model: from the model itself, its run folder's
    dataset, or the export folder's metadata.json; a model with none gets evenly spread hues.
    An export that serves a class map but no probabilities needs its metadata.json (the number
    of classes); the options that need probabilities (`probabilities`, `flip`) are refused for it.

    Args:
        model: a path as above, or a loaded Keras model (SynergySeg or single-scale).
        jit_compile: XLA for a Keras model; None (default) uses it only where a GPU is visible.
        num_threads: TFLite interpreter threads (default: all cores).
        gated: for a two-scale Keras model, run the full-resolution pass only on this share of
            tiles (in [0, 1]), those where the low scale is least sure (`models.gated`); None runs
            the whole image at both scales.

    Example:
        >>> segmenter = Segmenter("export/synthetic/model_float32.tflite")
        >>> segmenter.predict(np.zeros((256, 512, 3), np.uint8)).class_map.shape   # (256, 512)
    """

    def __init__(self, model, *, jit_compile=None, num_threads=None, gated=None):
        names = palette = None
        self._num_classes = None  # the runner's, else the export's metadata.json's
        # The stride of the class maps `predict` returns: 1 (the argmax of full-size probabilities)
        # but for an export read through its served class map (its metadata.json's stride).
        self.class_map_stride = 1
        if isinstance(model, keras.Model):
            self.source, self.form = model.name, "keras"
            check_finite(model, f"model {model.name!r}")
            self.runner = KerasRunner(model, jit_compile, gated)
            names, palette = class_info(model)
        else:
            self.form, self.source = _resolve(model)
            if self.form == "keras":
                loaded = load_model(self.source)
                self.runner = KerasRunner(loaded, jit_compile, gated)
                names, palette = class_info(loaded, self.source)
            else:
                if gated is not None:
                    raise ValueError(f"gated inference needs the Keras model; {self.source!r} is an "
                                     f"exported {self.form} (export holds the full two-scale graph)")
                self.runner = (SavedModelRunner(self.source) if self.form == "saved_model"
                               else TFLiteRunner(self.source, num_threads))
                names, palette = self._export_classes()
        self._num_classes = self._num_classes or self.runner.num_classes
        if self._num_classes is None:
            raise ValueError(
                f"{self.source!r} serves {CLASS_MAP!r} without {PROBABILITIES!r}, so only "
                f"{metadata_path(self.source)!r} beside it could give its number of classes, and "
                "there is none: keep the export folder's metadata.json with the model")
        generic_names, generic_colors = generic_palette(self.num_classes)
        self.class_names = list(names) if names is not None else generic_names
        self.palette = [list(map(int, c)) for c in palette] if palette is not None else generic_colors

    def _export_classes(self):
        """Names and colours from the export's metadata.json, checked against the artifact; it also
        gives the number of classes of an artifact without probabilities."""
        values = read_metadata(self.source)
        if values is None:
            return None, None
        another = ("the file comes from another export; export the model again or keep each "
                   "export in its own folder")
        num_classes = self.runner.num_classes
        if num_classes is not None and values["num_classes"] != num_classes:
            raise ValueError(
                f"{self.source!r} predicts {num_classes} classes but {metadata_path(self.source)!r} "
                f"beside it describes a model of {values['num_classes']}: {another}")
        if set(values["outputs"]) != set(self.runner.outputs):
            raise ValueError(
                f"{self.source!r} serves {list(self.runner.outputs)} but {metadata_path(self.source)!r} "
                f"beside it records outputs {values['outputs']}: {another}")
        self._num_classes = values["num_classes"]
        if not self.has_probabilities:
            self.class_map_stride = values["class_map_stride"]
        return values.get("class_names"), values.get("palette")

    @property
    def num_classes(self):
        return self._num_classes

    @property
    def outputs(self):
        """The maps the model gives, names of `export.SERVING_OUTPUTS` ("class_map",
        "probabilities", "uncertainty"): an export's own, the probabilities (and a two-scale
        model's uncertainty) for a Keras model."""
        return self.runner.outputs

    @property
    def has_probabilities(self):
        """False for an export that serves a class map without the probabilities."""
        return PROBABILITIES in self.runner.outputs

    @property
    def two_scale(self):
        """True when predictions carry the low scale's uncertainty map."""
        return self.runner.two_scale

    @property
    def input_size(self):
        """`(height, width)` the model runs at (a TFLite file's fixed size), or None for any size."""
        return self.runner.input_size

    def __repr__(self):
        return (f"Segmenter({self.source!r}, form={self.form!r}, num_classes={self.num_classes}, "
                f"two_scale={self.two_scale}, outputs={list(self.outputs)})")

    def check_options(self, *, probabilities=False, resize_factor=None, flip=False):
        """Raises ValueError naming the model and the reason when `predict` cannot take these options."""
        if resize_factor is not None:
            if self.input_size is not None:
                raise ValueError(f"resize_factor does not apply to {self.source!r}: a TFLite model "
                                 f"runs at its fixed size {self.input_size[0]}x{self.input_size[1]}")
            if not 0 < resize_factor <= MAX_RESIZE_FACTOR:
                raise ValueError(f"resize_factor must be in (0, {MAX_RESIZE_FACTOR}], got {resize_factor}")
        # flip averages the probabilities of the picture and its mirror image
        wanted = " and ".join(name for name, on in (("probabilities", probabilities), ("flip", flip)) if on)
        if wanted and not self.has_probabilities:
            raise ValueError(
                f"{wanted} needs the model's {PROBABILITIES!r} output, which {self.source!r} does "
                f"not serve (its outputs: {list(self.outputs)}): export it with {PROBABILITIES!r} "
                f"among its outputs, or predict without {wanted}")

    def predict(self, images, *, probabilities=False, resize_factor=None, flip=False):
        """Segments one picture or a batch; each result is at its picture's own size.

        Args:
            images: one picture (a path, a PIL image, an (H, W, 3) array of RGB in [0, 255]; gray
                and RGBA are converted) or a batch (an (N, H, W, 3) array or a list of pictures,
                sizes may differ).
            probabilities: also return the (H, W, C) fused probabilities.
            resize_factor: run the model on the picture resized by this factor (e.g. 0.5 for
                speed); the result is resized back (bilinear probabilities, as evaluate.py; an
                export's class map without probabilities nearest-neighbour). Not for TFLite
                files, which always run at their fixed size (their result is resized the same way).
            flip: also run the mirrored picture and average the probabilities (test-time flip).
            Exports without probabilities refuse `probabilities` and `flip` (`check_options`).

        Returns:
            A `Segmentation` for one picture, a list of them for a batch.
        """
        self.check_options(probabilities=probabilities, resize_factor=resize_factor, flip=flip)
        batch, single = io.as_batch(images)
        results = [None] * len(batch)
        # Pictures of one size run together; a list of mixed sizes runs size by size.
        by_size = {}
        for i, image in enumerate(batch):
            by_size.setdefault(image.shape[:2], []).append(i)
        for size, indices in by_size.items():
            stacked = np.stack([batch[i] for i in indices]).astype(np.float32)
            for i, result in zip(indices, self._predict_same_size(stacked, probabilities,
                                                                  resize_factor, flip)):
                results[i] = result
        return results[0] if single else results

    def _run(self, images, flip):
        """`(probabilities or None, class map or None, uncertainty or None)` of a batch: the
        probabilities where the model gives them, else its class map."""
        maps = self.runner(images)
        probabilities, uncertainty = maps.get(PROBABILITIES), maps.get(UNCERTAINTY)
        if probabilities is None:
            class_map = maps[CLASS_MAP]
            if class_map.size and not 0 <= class_map.min() <= class_map.max() < self.num_classes:
                raise ValueError(f"{self.source}: its class map holds ids outside 0..{self.num_classes - 1} "
                                 f"(the {self.num_classes} classes {metadata_path(self.source)!r} "
                                 "describes): the file comes from another export")
            return None, class_map, uncertainty
        if not np.isfinite(probabilities).all():
            # The Keras and SavedModel forms are checked on loading; a .tflite file's weights are
            # constants, seen only through its outputs.
            raise ValueError(f"{self.source}: the model's probabilities hold NaN or infinity "
                             "(its weights are not finite: the training diverged); refused")
        if flip:
            mirrored = self.runner(images[:, :, ::-1])
            probabilities = 0.5 * (probabilities + mirrored[PROBABILITIES][:, :, ::-1])
            if uncertainty is not None:
                uncertainty = 0.5 * (uncertainty + mirrored[UNCERTAINTY][:, :, ::-1])
        return probabilities, None, uncertainty

    def _predict_same_size(self, images, want_probabilities, resize_factor, flip):
        size = images.shape[1:3]
        model_size = self.input_size
        if model_size is None and resize_factor not in (None, 1):
            model_size = tuple(max(1, int(round(s * resize_factor))) for s in size)
        if model_size is not None and tuple(model_size) != tuple(size):
            # As the evaluation pipeline resizes pictures: bilinear on float pixels.
            images = tf.image.resize(images, model_size, method="bilinear").numpy()
        probabilities, class_maps, uncertainty = self._run(images, flip)
        if uncertainty is not None and uncertainty.shape[1:3] != size:
            uncertainty = tf.image.resize(uncertainty[..., None], size, method="bilinear").numpy()[..., 0]
        if probabilities is not None:
            if probabilities.shape[1:3] != size:
                probabilities = tf.image.resize(probabilities, size, method="bilinear").numpy()
            class_maps = np.argmax(probabilities, axis=-1)
        elif class_maps.shape[1:3] != size:
            # Class ids cannot be interpolated: each pixel takes the id of the model's pixel it falls in.
            class_maps = tf.image.resize(class_maps[..., None], size, method="nearest").numpy()[..., 0]
        class_maps = class_maps.astype(np.uint8 if self.num_classes <= 256 else np.int32)
        return [Segmentation(class_maps[i], None if uncertainty is None else uncertainty[i],
                             probabilities[i] if want_probabilities else None)
                for i in range(len(images))]

    def colorize(self, class_map):
        """(H, W) class ids -> (H, W, 3) uint8 RGB in the model's palette."""
        return colorize(class_map, self.palette)

    def overlay(self, image, class_map, opacity=0.5):
        """The picture with its colour map blended in: `(1 - opacity) * image + opacity * colours`."""
        from synergyseg.predict.render import overlay

        return overlay(io.as_batch(image)[0][0], self.colorize(class_map), opacity)
