"""The serving graph shared by every export format: uint8 RGB images in, class map and fused maps out."""

import keras
from keras import ops

from synergyseg.models.names import FUSED, INPUT, UNCERTAINTY
from synergyseg.models.resize import resize_bilinear, spatial_size
from synergyseg.models.synergy import as_synergyseg

# Output names of every exported artifact (SavedModel signature, TFLite signature, ONNX outputs).
# The exported model's outputs, by name, in every format.
CLASS_MAP, PROBABILITIES = "class_map", "probabilities"
SERVING_OUTPUTS = (CLASS_MAP, PROBABILITIES, UNCERTAINTY)
_GRID = "fused_on_grid"  # the serving graph's inner name for the fused map on the head's grid


@keras.saving.register_keras_serializable(package="synergyseg")
class ImagesToFloat(keras.layers.Layer):
    """Casts a uint8 image batch to float32 in [0, 255], exactly what Keras does to the model's input.

    Done before the model, not inside it, so the half-resolution branch resizes float pixels as
    in training (resizing uint8 pixels would round them).

    Input `(batch, h, w, 3)` uint8; output the same shape, float32.
    """

    def call(self, images):
        return ops.cast(images, "float32")

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, images):
        return keras.KerasTensor(images.shape, dtype="float32")


def argmax_int32(probabilities):
    """int32 argmax over the last axis of non-negative maps, with builtin TFLite ops only."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        # keras.ops.argmax adds a negative-zero fix built on BitwiseAnd, which TFLite has no
        # builtin kernel for; probabilities are never negative, so plain argmax is the same.
        return tf.argmax(probabilities, axis=-1, output_type=tf.int32)
    return ops.cast(ops.argmax(probabilities, axis=-1), "int32")


@keras.saving.register_keras_serializable(package="synergyseg")
class ClassMap(keras.layers.Layer):
    """The predicted class of each pixel: argmax over the last axis of `(batch, h, w, classes)`, int32.

    Output `(batch, h, w)` int32.
    """

    def call(self, probabilities):
        return argmax_int32(probabilities)

    def compute_output_shape(self, input_shape):
        return input_shape[:-1]

    def compute_output_spec(self, probabilities):
        return keras.KerasTensor(probabilities.shape[:-1], dtype="int32")


@keras.saving.register_keras_serializable(package="synergyseg")
class StridedClassMap(keras.layers.Layer):
    """The class map of a map on a coarse grid, taken at 1/`stride` of the image size and replicated.

    Call it on `[probabilities, images]`: `probabilities` `(batch, gh, gw, classes)` on the head's
    grid, `images` `(batch, h, w, any)`. The map is resized bilinearly to `ceil(h / stride) x
    ceil(w / stride)`, its argmax taken there and each cell repeated over its `stride x stride`
    pixels (cropped to `h x w`). `stride=1` is `ClassMap` of the full-size map; larger strides
    trade pixels near class boundaries for time: the full-size bilinear upsample and argmax of
    every class's map cost a light real-time model a third of its frame on a CPU (TFLite's
    ARG_MAX runs on one thread, outside XNNPACK); at stride 4 they touch 16x fewer values and the
    repeat is a broadcast multiply and a depth-to-space, which XNNPACK runs.

    Output `(batch, h, w)` int32.
    """

    def __init__(self, stride, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(stride, int) or stride < 1:
            raise ValueError(f"class map stride must be a positive integer, got {stride!r}")
        self.stride = stride

    def call(self, inputs):
        probabilities, images = inputs
        height, width = spatial_size(images)
        s = self.stride
        coarse = resize_bilinear(probabilities, ((height + s - 1) // s, (width + s - 1) // s))
        classes = argmax_int32(coarse)
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            # float, as XNNPACK runs MUL and DEPTH_TO_SPACE on float32 (class ids < 2**24 are exact)
            cells = ops.cast(classes, "float32")[..., None] * ops.ones((s * s,), "float32")
            # squeeze, not [..., 0]: TFLite runs that STRIDED_SLICE at 10 ms a 512x1024 map
            full = ops.squeeze(tf.nn.depth_to_space(cells, s), axis=-1)
        else:
            full = ops.repeat(ops.repeat(classes, s, axis=1), s, axis=2)
        if not (isinstance(height, int) and isinstance(width, int) and height % s == 0 and width % s == 0):
            full = full[:, :height, :width]  # the last cells overhang an odd size
        return ops.cast(full, "int32")

    def compute_output_shape(self, input_shape):
        return input_shape[1][:3]

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(inputs[1].shape[:3], dtype="int32")

    def get_config(self):
        return {**super().get_config(), "stride": self.stride}


def check_serving_options(model, outputs=SERVING_OUTPUTS, class_map_stride=1):
    """Returns `(outputs, class_map_stride)` checked against `model`, or raises ValueError."""
    outputs = tuple(outputs)
    unknown = [name for name in outputs if name not in SERVING_OUTPUTS]
    if not outputs or unknown or len(set(outputs)) != len(outputs):
        raise ValueError(f"outputs must be distinct names of {SERVING_OUTPUTS}, got {outputs!r}")
    if not isinstance(class_map_stride, int) or class_map_stride < 1:
        raise ValueError(f"class_map_stride must be a positive integer, got {class_map_stride!r}")
    if class_map_stride != 1:
        model = as_synergyseg(model)
        grid = getattr(model.submodel, "logits_stride", None)
        if model.fuse_at != "decoder" or grid is None:
            raise ValueError(f"class_map_stride={class_map_stride!r} needs a model fused at the decoder "
                             f"(its fused map on the head's grid); {model.name} fuses at the "
                             f"{model.fuse_at} size: use class_map_stride=1")
        if class_map_stride > grid:
            raise ValueError(f"class_map_stride must be an integer from 1 to the head's grid stride "
                             f"({grid}), got {class_map_stride!r}")
        if CLASS_MAP not in outputs:
            raise ValueError(f"class_map_stride={class_map_stride} changes only {CLASS_MAP!r}, "
                             f"which outputs {outputs!r} leave out")
    return outputs, class_map_stride


def build_serving_model(model, outputs=SERVING_OUTPUTS, class_map_stride=1):
    """A model sharing `model`'s weights: uint8 `images` -> {class_map, probabilities, uncertainty}.

    Args:
        model: a trained SynergySeg model (from `build_synergyseg` or its `.keras` file).
        outputs: which of `SERVING_OUTPUTS` to serve (all by default); a deployment that needs
            only "class_map" skips the full-size maps it would not read.
        class_map_stride: 1 (default): the argmax of the full-size fused map. 2, 4 or up to the
            head's grid stride (models fused at the decoder): the argmax at 1/stride of the image
            size, repeated over each cell (`StridedClassMap`): faster, and different from the
            exact map only near class boundaries (benchmarks/realtime_speed.py reports the share
            of pixels that agree).

    Returns:
        A Keras model with input "images" `(batch, h, w, 3)` uint8 of any size and a dict output:
        "class_map" `(batch, h, w)` int32 (argmax of the fused probabilities), "probabilities"
        `(batch, h, w, classes)` float32 (the fused map) and "uncertainty" `(batch, h, w, 1)`
        float32 (the paper's upsampled low-scale uncertainty mask), or the ones `outputs` names.

    Example:
        >>> serving = build_serving_model(keras.models.load_model("run/best.keras"))
        >>> serving(np.zeros((1, 64, 64, 3), np.uint8))["class_map"].shape   # (1, 64, 64)
    """
    outputs, class_map_stride = check_serving_options(model, outputs, class_map_stride)
    # The per-scale outputs only when the uncertainty is served: a single-scale model with them
    # would compute its low scale again.
    scale_outputs = UNCERTAINTY in outputs
    scales = as_synergyseg(model).with_fusion(scale_outputs=scale_outputs)
    needed = {}
    if PROBABILITIES in outputs or (CLASS_MAP in outputs and class_map_stride == 1):
        needed[FUSED] = scales.output[FUSED] if scale_outputs else scales.output
    if UNCERTAINTY in outputs:
        needed[UNCERTAINTY] = scales.output[UNCERTAINTY]
    if class_map_stride != 1:
        needed[_GRID] = scales.fused_on_grid().output
    view = keras.Model(scales.inputs, needed, name=scales.name)
    images = keras.Input((None, None, 3), dtype="uint8", name=INPUT)
    as_float = ImagesToFloat(name="images_to_float")(images)
    maps = view(as_float)
    # Identity layers give each output a stable name in every format.
    served = {}
    if CLASS_MAP in outputs:
        served[CLASS_MAP] = (ClassMap(name=CLASS_MAP)(maps[FUSED]) if class_map_stride == 1 else
                             StridedClassMap(class_map_stride, name=CLASS_MAP)([maps[_GRID], as_float]))
    if PROBABILITIES in outputs:
        served[PROBABILITIES] = keras.layers.Identity(name=PROBABILITIES)(maps[FUSED])
    if UNCERTAINTY in outputs:
        served[UNCERTAINTY] = keras.layers.Identity(name=UNCERTAINTY)(maps[UNCERTAINTY])
    return keras.Model(images, served, name=f"{model.name}_serving")
