import keras

from synergyseg import build_deeplabv3plus
from synergyseg.models.flops import conv_flops
from tests.reference import tiny_kwargs


def test_counts_a_strided_conv_by_hand():
    x = keras.Input((None, None, 3))
    y = keras.layers.Conv2D(8, 3, strides=2, padding="same")(x)
    y = keras.layers.Conv2D(4, 1)(y)
    model = keras.Model(x, y)
    # 10x14 -> 5x7 outputs; 3x3x3 inputs per output for 8 filters, then 8 inputs for 4 filters.
    assert conv_flops(model, 10, 14) == 2 * 5 * 7 * (3 * 3 * 3 * 8 + 8 * 4)


def test_resnet50_matches_its_published_multiply_adds():
    # ResNet-50 at 224x224 is usually quoted at 3.86 GMACs for its conv layers (without fc).
    flops = conv_flops(keras.applications.ResNet50(weights=None, include_top=False), 224, 224)
    assert abs(flops / 2 - 3.86e9) / 3.86e9 < 0.01


def test_half_resolution_scale_costs_a_quarter():
    model = build_deeplabv3plus(5, **tiny_kwargs())
    full, half = conv_flops(model, 128, 256), conv_flops(model, 64, 128)
    assert abs(half / full - 0.25) < 0.01


def test_counts_depthwise_and_separable_convs_by_hand():
    x = keras.Input((None, None, 3))
    y = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2)(x)
    y = keras.layers.SeparableConv2D(5, 3, padding="same", dilation_rate=2)(y)
    y = keras.layers.Conv2D(4, 1)(y)
    model = keras.Model(x, y)
    # 11x14 -> 6x7: depthwise 3x3 on 3 channels x 2 = 6 maps; separable: 3x3 on 6 maps, then
    # 6 -> 5 pointwise; then 5 -> 4. Dilation adds no multiply-adds.
    per_position = 3 * 3 * 3 * 2 + (3 * 3 * 6 + 6 * 5) + 5 * 4
    assert conv_flops(model, 11, 14) == 2 * 6 * 7 * per_position
