"""Counting a model's FLOPs at a given input size (for speed reports): convolutions, and the resizes,
softmaxes and fusion that decide what the second scale costs.

2 FLOPs per multiply-add. Elementwise work is counted per output value with the constants below
(a convention, stated once here): it is what moves when the fusion runs at the input size instead
of the head's grid, while the convolutions stay the same.
"""

import keras

from synergyseg.models.fusion import UncertaintyMask, _Fusion, fusion_name
from synergyseg.models.resize import Downsample, ResizeLike

CONVS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
# A bilinear sample: 4 neighbours weighted and summed, 4 multiply-adds.
RESIZE_FLOPS = 8
# Softmax over classes: subtract the max, exp, sum, divide (and the max itself).
SOFTMAX_FLOPS = 5
# Each fusion per value of its output, its own upsampling of S_lo aside (counted as a resize when
# S_lo is smaller than S_hi): eq. 1 is 1 - U, a product and a sum; renormalizing a sum and a divide.
FUSION_FLOPS = {"uncertainty": 3, "uncertainty_confidence": 3, "low": 0, "high": 0, "average": 2,
                "max": 1, "attention": 4}
NORMALIZE_FLOPS = 2


def conv_flops(model, height, width):
    """FLOPs (2 per multiply-add) of every convolution in `model` at `height x width`.

    Counts Conv2D, DepthwiseConv2D (kh * kw multiply-adds per output channel) and SeparableConv2D
    (its depthwise part plus its 1x1 pointwise part); other layers (BatchNorm, activations,
    resizes) are not counted. Nested models (the trunk inside a head, the submodel inside
    SynergySeg, called once per scale) are counted at every size they are called with, so a
    two-scale model counts both scales.
    """
    return _count(model, (1, height, width, model.inputs[0].shape[-1]), elementwise=False)


def model_flops(model, height, width):
    """`conv_flops` plus the elementwise work that grows with the maps' size.

    Adds bilinear resizes (`ResizeLike`, `Downsample`, a fusion's U(S_lo), the uncertainty mask's
    upsample) at RESIZE_FLOPS per output value, softmax at SOFTMAX_FLOPS per value, and each
    fusion's arithmetic (FUSION_FLOPS, plus NORMALIZE_FLOPS when it renormalizes), so
    `SynergySeg(fuse_at="input")` and `fuse_at="decoder"` differ by where that work runs.
    BatchNorm, activations other than softmax and poolings are not counted.
    """
    return _count(model, (1, height, width, model.inputs[0].shape[-1]), elementwise=True)


def _counted(layer, elementwise):
    if isinstance(layer, CONVS) or isinstance(layer, keras.Model):
        return True
    if not elementwise:
        return False
    softmax = isinstance(layer, keras.layers.Activation) and getattr(layer.activation, "__name__", "") == "softmax"
    return softmax or isinstance(layer, (ResizeLike, Downsample, _Fusion, UncertaintyMask, keras.layers.Softmax))


def _count(model, input_shape, elementwise):
    # Every call of a counted layer inside `model` (a shared submodel is called once per scale).
    nodes = [node for depth_nodes in model._nodes_by_depth.values() for node in depth_nodes
             if _counted(node.operation, elementwise)]
    tensors = [t for node in nodes for t in list(node.input_tensors) + list(node.outputs)]
    probe = keras.Model(model.inputs, tensors)
    shapes = iter(probe(keras.KerasTensor(input_shape)))
    total = 0
    for node in nodes:
        inputs = [tuple(next(shapes).shape) for _ in node.input_tensors]
        outputs = [tuple(next(shapes).shape) for _ in node.outputs]
        total += _node_flops(node.operation, inputs, outputs, elementwise)
    return total


def _values(shape):
    count = 1
    for dim in shape[1:]:
        count *= dim
    return count


def _node_flops(layer, inputs, outputs, elementwise):
    if isinstance(layer, keras.Model):
        return _count(layer, inputs[0], elementwise)
    if isinstance(layer, CONVS):
        return 2 * outputs[0][1] * outputs[0][2] * _multiply_adds_per_position(layer)
    if isinstance(layer, (ResizeLike, Downsample)):
        return RESIZE_FLOPS * _values(outputs[0]) if inputs[0][1:3] != outputs[0][1:3] else 0
    if isinstance(layer, UncertaintyMask):
        mask = inputs[0][:3] + (1,)
        resize = RESIZE_FLOPS * _values(outputs[0]) if mask[1:3] != outputs[0][1:3] else 0
        return _values(inputs[0]) + resize  # the max over classes, then the upsample
    if isinstance(layer, _Fusion):
        return _fusion_flops(layer, inputs[0], outputs[0])
    return SOFTMAX_FLOPS * _values(outputs[0])  # softmax


def _fusion_flops(layer, s_lo, fused):
    name = fusion_name(layer)
    upsample = s_lo[1:3] != fused[1:3]
    total = FUSION_FLOPS[name] * _values(fused)
    if name != "high" and upsample:
        total += RESIZE_FLOPS * _values(fused)  # U(S_lo)
    if name == "uncertainty_confidence":
        total += _values(s_lo) + (RESIZE_FLOPS * _values(fused[:3] + (1,)) if upsample else 0)
    if name == "attention":
        hidden, score = layer.hidden, layer.score
        positions = s_lo[1] * s_lo[2]
        total += 2 * positions * (_multiply_adds_per_position(hidden) + _multiply_adds_per_position(score))
        total += (RESIZE_FLOPS * _values(fused[:3] + (1,)) if upsample else 0) + 2 * _values(s_lo)
    if layer.normalize and name in ("uncertainty", "uncertainty_confidence", "max", "attention"):
        total += NORMALIZE_FLOPS * _values(fused)
    return total


def _multiply_adds_per_position(layer):
    kh, kw = layer.kernel_size
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        # kernel (kh, kw, c_in, depth_multiplier): each output channel sees one input channel.
        return kh * kw * layer.kernel.shape[2] * layer.kernel.shape[3]
    if isinstance(layer, keras.layers.SeparableConv2D):
        c_in, multiplier = layer.depthwise_kernel.shape[2:]
        return kh * kw * c_in * multiplier + c_in * multiplier * layer.filters
    c_in = layer.kernel.shape[2]  # per group already
    return kh * kw * c_in * layer.filters
