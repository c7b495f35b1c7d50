import pytest
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


# --- two-scale models, LR-ASPP, and the fusion's resolution ---------------------------------

import numpy as np  # noqa: E402

from synergyseg import SynergySeg, build_synergyseg  # noqa: E402
from synergyseg.models import flops as counter  # noqa: E402
from synergyseg.models.lraspp import LRASPP  # noqa: E402
from synergyseg.models.submodel import SegmentationModel  # noqa: E402


class _OneConv(SegmentationModel):
    """A per-scale model small enough to count by hand: one 3x3 stride-4 conv to 3 class logits."""

    def __init__(self, **kwargs):
        image = keras.Input((None, None, 3))
        super().__init__(image, keras.layers.Conv2D(3, 3, strides=4, padding="same")(image), **kwargs)


def test_two_scale_model_counts_both_scales():
    model = build_synergyseg(5, **tiny_kwargs())
    assert conv_flops(model, 64, 96) == conv_flops(model.submodel, 64, 96) + conv_flops(model.submodel, 32, 48)
    single = model.with_fusion("high")  # the single-scale model computes no low scale
    assert conv_flops(single, 64, 96) == conv_flops(model.submodel, 64, 96)


@pytest.mark.parametrize("fuse_at", ["input", "decoder"])
def test_fusion_resolution_counted_by_hand(fuse_at):
    model = SynergySeg(_OneConv(), "uncertainty", fuse_at=fuse_at)
    h, w, c = 32, 48, 3
    convs = 2 * 27 * 3 * (8 * 12 + 4 * 6)  # 3x3x3 -> 3 at 8x12 (high) and 4x6 (low, 16x24 input)
    downsample = 8 * 16 * 24 * 3
    eq1 = (3 + 2) * c  # eq. 1 and the renormalization, per pixel of the fused map
    if fuse_at == "input":
        # Each scale: logits upsampled to its input size, softmax there; eq. 1 upsamples S_lo 2x.
        per_scale = (8 + 5) * c * (h * w + h * w // 4)
        elementwise = downsample + per_scale + (8 * c + eq1) * h * w
    else:
        # Low logits 4x6 -> 8x12, softmax of both there, eq. 1 there, one upsample of the result.
        grid = 8 * 12
        elementwise = downsample + 8 * c * grid + 2 * 5 * c * grid + eq1 * grid + 8 * c * h * w
    assert counter.conv_flops(model, h, w) == convs
    assert counter.model_flops(model, h, w) == convs + elementwise


def test_lraspp_head_counted_by_hand():
    model = LRASPP(4, backbone="mobilenetv3_small", output_stride=32, head_filters=8)
    trunk = conv_flops(model.trunk, 64, 128)
    # Deep features 2x4x576, skip 8x16x24: the gated 1x1 conv, the gate's conv on the 1x1 mean,
    # the class conv after the upsample and the skip's class projection.
    head = 2 * (2 * 4 * 576 * 8 + 576 * 8 + 8 * 16 * 8 * 4 + 8 * 16 * 24 * 4)
    assert conv_flops(model, 64, 128) == trunk + head


def test_decoder_fusion_costs_less_elementwise_work_than_fusion_at_the_input_size():
    model = build_synergyseg(19, backbone="mobilenetv3_large_cut16", head="lraspp", fuse_at="decoder")
    at_input = model.with_fusion(fuse_at="input")
    assert conv_flops(model, 512, 1024) == conv_flops(at_input, 512, 1024)
    saved = counter.model_flops(at_input, 512, 1024) - counter.model_flops(model, 512, 1024)
    assert saved > 0.05e9 and np.isfinite(saved)
