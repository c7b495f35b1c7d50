"""Counting a model's convolution FLOPs at a given input size (for speed reports)."""

import keras


CONVS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)


def conv_flops(model, height, width):
    """FLOPs (2 per multiply-add) of every convolution in a single-scale `model` at `height x width`.

    Counts Conv2D, DepthwiseConv2D (kh * kw multiply-adds per output channel) and SeparableConv2D
    (its depthwise part plus its 1x1 pointwise part); other layers (BatchNorm, activations,
    resizes) are not counted.

    Nested models (the trunk inside DeepLabV3+) are counted at the size their input has inside
    `model`. For the two-scale SynergySeg model, count its submodel at both scales:
    `conv_flops(sub, h, w) + conv_flops(sub, ceil(h / 2), ceil(w / 2))`.
    """
    return _flops(model, (1, height, width, model.inputs[0].shape[-1]))


def _flops(model, input_shape):
    convs = [l for l in model.layers if isinstance(l, CONVS)]
    nested = [l for l in model.layers if isinstance(l, keras.Model)]
    # A nested Model's `.input` is its own Input; the tensor feeding it in `model` is its first
    # inbound node's input (Keras keeps no public accessor for it).
    feeds = [l._inbound_nodes[0].input_tensors[0] for l in nested]
    probe = keras.Model(model.inputs, [l.output for l in convs] + feeds)
    shapes = probe(keras.KerasTensor(input_shape))
    total = 0
    for layer, out in zip(convs, shapes[: len(convs)]):
        total += 2 * out.shape[1] * out.shape[2] * _multiply_adds_per_position(layer)
    for layer, inp in zip(nested, shapes[len(convs) :]):
        total += _flops(layer, tuple(inp.shape))
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
