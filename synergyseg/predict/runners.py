"""One runner per saved form of a model: float RGB batch in, its served maps out by name.

Every runner has the same small surface, so `Segmenter` does resizing, flipping and the argmax
once for all forms:

    runner.outputs          the maps it returns, names of `SERVING_OUTPUTS`: "probabilities"
                            and "uncertainty" for a Keras model (the latter two-scale only);
                            an export's own outputs (`export_model(outputs=...)`)
    runner.num_classes      classes of the probabilities, or None when it returns none
    runner.input_size       (height, width) the model needs (TFLite), or None for any size
    runner.two_scale        True when it returns the low scale's uncertainty
    runner(images)          float32 (B, h, w, 3) RGB in [0, 255] -> {name: map} of `outputs`:
                            "probabilities" (B, h, w, C) float32, "class_map" (B, h, w) int32,
                            "uncertainty" (B, h, w) float32
"""

import os

import numpy as np
import tensorflow as tf

from synergyseg.export.saved_model import SIGNATURE_KEY
from synergyseg.export.serving import CLASS_MAP, PROBABILITIES, SERVING_OUTPUTS
from synergyseg.models.names import FUSED, UNCERTAINTY
from synergyseg.models.synergy import SynergySeg
from synergyseg.run_folder import non_finite_variables


def _served(path, kind, names):
    """The outputs of `SERVING_OUTPUTS` an export's signature returns (`names`), or ValueError."""
    served = tuple(name for name in SERVING_OUTPUTS if name in names)
    if CLASS_MAP not in served and PROBABILITIES not in served:
        raise ValueError(f"{kind} {path!r} is not a synergyseg export: its signature returns "
                         f"{sorted(names)}, neither {CLASS_MAP!r} nor {PROBABILITIES!r}; "
                         "export it with synergyseg.export")
    return served


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
        self.outputs = (PROBABILITIES, UNCERTAINTY) if self.two_scale else (PROBABILITIES,)
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
        if not self.two_scale:
            return {PROBABILITIES: probabilities.numpy()}
        return {PROBABILITIES: probabilities.numpy(), UNCERTAINTY: uncertainty.numpy()}


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
        specs = self._serve.structured_outputs
        self.outputs = _served(self.path, "SavedModel", specs)
        self.num_classes = int(specs[PROBABILITIES].shape[-1]) if PROBABILITIES in self.outputs else None
        self.two_scale = UNCERTAINTY in self.outputs
        self.input_size = None

    def __call__(self, images):
        served = self._serve(images=tf.constant(_to_uint8(images)))
        return _unpack({name: served[name].numpy() for name in self.outputs})


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
        if "images" not in inputs:
            raise ValueError(f"TFLite file {self.path!r} is not a synergyseg export: its signature "
                             f"takes {sorted(inputs)} and returns {sorted(outputs)}")
        self.outputs = _served(self.path, "TFLite file", outputs)
        _, height, width, _ = (int(v) for v in inputs["images"]["shape"])
        self.input_size = (height, width)
        self.num_classes = (int(outputs[PROBABILITIES]["shape"][-1]) if PROBABILITIES in self.outputs
                            else None)
        self.two_scale = UNCERTAINTY in self.outputs

    def __call__(self, images):
        maps = {name: [] for name in self.outputs}
        for image in _to_uint8(images):
            served = self._runner(images=image[None])
            for name in self.outputs:
                maps[name].append(np.asarray(served[name]))
        return _unpack({name: np.concatenate(batches) for name, batches in maps.items()})


def _unpack(served):
    """An export's maps as runners return them: float32 probabilities, int32 class map, (B, h, w)
    uncertainty (the signature's (B, h, w, 1))."""
    maps = {}
    if PROBABILITIES in served:
        maps[PROBABILITIES] = served[PROBABILITIES].astype(np.float32, copy=False)
    if CLASS_MAP in served:
        maps[CLASS_MAP] = served[CLASS_MAP].astype(np.int32, copy=False)
    if UNCERTAINTY in served:
        maps[UNCERTAINTY] = served[UNCERTAINTY].astype(np.float32, copy=False)[..., 0]
    return maps
