"""One runner per saved form of a model: float RGB batch in, fused probabilities and uncertainty out.

Every runner has the same small surface, so `Segmenter` does resizing, flipping and the argmax
once for all forms:

    runner.num_classes      classes of the probabilities
    runner.input_size       (height, width) the model needs (TFLite), or None for any size
    runner.two_scale        True when it returns the low scale's uncertainty
    runner(images)          float32 (B, h, w, 3) RGB in [0, 255] ->
                            (probabilities (B, h, w, C) float32, uncertainty (B, h, w) or None)
"""

import os

import numpy as np
import tensorflow as tf

from synergyseg.export.saved_model import SIGNATURE_KEY
from synergyseg.export.serving import PROBABILITIES
from synergyseg.models.names import FUSED, UNCERTAINTY
from synergyseg.models.synergy import SynergySeg
from synergyseg.run_folder import non_finite_variables


def _to_uint8(images):
    """The uint8 pixels an exported serving graph takes (already-integer images stay exact)."""
    return np.clip(np.round(images), 0, 255).astype(np.uint8)


class KerasRunner:
    """A loaded Keras model (SynergySeg or single-scale) in one traced function.

    The function is `evaluation.Predictor`'s: the model with its scale outputs on float32 images,
    so its probabilities are the ones evaluate.py scores. `jit_compile=None` uses XLA only where a
    GPU is visible (on a CPU it compiles slower than it runs for one picture). `gated`: a share
    of tiles in [0, 1] for `models.gated` (the high scale only where the low scale is unsure).
    """

    def __init__(self, model, jit_compile=None, gated=None):
        if jit_compile is None:
            # Not with gating: its number of selected tiles is data-dependent, XLA wants fixed shapes.
            jit_compile = gated is None and bool(tf.config.list_physical_devices("GPU"))
        self.two_scale = isinstance(model, SynergySeg)
        if gated is not None:
            if not self.two_scale:
                raise ValueError(f"gated inference needs a two-scale SynergySeg; {model.name!r} is not one")
            from synergyseg.models.gated import gated_synergyseg

            # The high scale only on the `gated` share of tiles where the low scale is least sure.
            self.model = gated_synergyseg(model, fraction=gated, scale_outputs=True)
        else:
            self.model = model.with_fusion(scale_outputs=True) if self.two_scale else model
        self.num_classes = int(model.num_classes if self.two_scale else model.output_shape[-1])
        self.input_size = None
        self.jit_compile = bool(jit_compile)
        self._run = tf.function(self._probabilities, jit_compile=self.jit_compile, input_signature=[
            tf.TensorSpec((None, None, None, 3), tf.float32)])

    def _probabilities(self, images):
        outputs = self.model(images, training=False)
        if not self.two_scale:
            return tf.cast(outputs, tf.float32), tf.zeros((0,))
        return tf.cast(outputs[FUSED], tf.float32), tf.cast(outputs[UNCERTAINTY][..., 0], tf.float32)

    def __call__(self, images):
        probabilities, uncertainty = self._run(tf.constant(images, tf.float32))
        return probabilities.numpy(), uncertainty.numpy() if self.two_scale else None


class SavedModelRunner:
    """An exported SavedModel's `serving_default` signature (uint8 images of any batch and size)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        try:
            loaded = tf.saved_model.load(self.path)
            self._serve = loaded.signatures[SIGNATURE_KEY]
        except Exception as e:  # TF raises many types for a foreign or damaged folder
            raise ValueError(f"Cannot load {self.path!r} as a synergyseg SavedModel "
                             f"(signature {SIGNATURE_KEY!r}): {e}") from e
        self._loaded = loaded  # keeps the variables alive
        bad = non_finite_variables(self._serve.variables)
        if bad:
            raise ValueError(f"{self.path}: variable {bad[0]} holds NaN or infinity; the model "
                             "diverged and is refused (export a checkpoint saved before that)")
        outputs = self._serve.structured_outputs
        if PROBABILITIES not in outputs:
            raise ValueError(f"SavedModel {self.path!r} has no {PROBABILITIES!r} output; "
                             "export it with synergyseg.export")
        self.num_classes = int(outputs[PROBABILITIES].shape[-1])
        self.two_scale = UNCERTAINTY in outputs
        self.input_size = None

    def __call__(self, images):
        outputs = self._serve(images=tf.constant(_to_uint8(images)))
        uncertainty = outputs[UNCERTAINTY].numpy()[..., 0] if self.two_scale else None
        return outputs[PROBABILITIES].numpy(), uncertainty


class TFLiteRunner:
    """A `.tflite` file of synergyseg.export in LiteRT (else tf.lite): one image of a fixed size per call."""

    def __init__(self, path, num_threads=None):
        from synergyseg.export.tflite import make_interpreter

        self.path = os.fspath(path)
        try:
            self._interpreter = make_interpreter(model_path=self.path,
                                                 num_threads=num_threads or os.cpu_count() or 1)
            self._runner = self._interpreter.get_signature_runner(SIGNATURE_KEY)
            inputs = self._runner.get_input_details()
            outputs = self._runner.get_output_details()
        except Exception as e:  # the interpreter raises ValueError/RuntimeError for foreign files
            raise ValueError(f"Cannot load {self.path!r} as a synergyseg TFLite model "
                             f"(signature {SIGNATURE_KEY!r}): {e}") from e
        if "images" not in inputs or PROBABILITIES not in outputs:
            raise ValueError(f"TFLite file {self.path!r} is not a synergyseg export: its signature "
                             f"takes {sorted(inputs)} and returns {sorted(outputs)}")
        _, height, width, _ = (int(v) for v in inputs["images"]["shape"])
        self.input_size = (height, width)
        self.num_classes = int(outputs[PROBABILITIES]["shape"][-1])
        self.two_scale = UNCERTAINTY in outputs

    def __call__(self, images):
        probabilities, uncertainty = [], []
        for image in _to_uint8(images):
            out = self._runner(images=image[None])
            probabilities.append(np.asarray(out[PROBABILITIES], np.float32))
            if self.two_scale:
                uncertainty.append(np.asarray(out[UNCERTAINTY], np.float32)[..., 0])
        return (np.concatenate(probabilities),
                np.concatenate(uncertainty) if self.two_scale else None)
