"""MobileNetV3 trunks against keras.applications, block by block, at activations of order 1.

With BatchNorm's initial statistics a random MobileNetV3 shrinks its signal to ~1e-11, where any
two networks "agree". Each BatchNorm's moving statistics are set from one batch first (momentum 0
for one training-mode call), so every block's output is of order 1 and a wrong block fails.
"""

import numpy as np
import pytest
import keras

from synergyseg.models import mobilenet, names
from synergyseg.models.mobilenet import NOT_PRETRAINED_PREFIX, build_mobilenetv3
from synergyseg.models.weights import load_backbone_weights

IMAGES = np.random.default_rng(0).uniform(0, 255, (2, 96, 128, 3)).astype("float32")
# variant: (keras.applications constructor, output stride, blocks identical to keras.applications,
# and whether its last conv is keras.applications' `conv_1` on the same input).
VARIANTS = {
    "mobilenetv3_large": ("MobileNetV3Large", 32, 15, True),
    "mobilenetv3_small": ("MobileNetV3Small", 32, 11, True),
    "mobilenetv3_large_cut16": ("MobileNetV3Large", 16, 12, False),
    "mobilenetv3_large_reduced": ("MobileNetV3Large", 16, 12, False),
    "mobilenetv3_small_reduced": ("MobileNetV3Small", 16, 8, False),
    "mobilenetv3_small_minimal": ("MobileNetV3Small", 32, 11, True),
    "mobilenetv3_small_minimal_cut16": ("MobileNetV3Small", 16, 8, False),
}


def _reference(constructor, **kwargs):
    """keras.applications' network (weights=None, its own x / 127.5 - 1 preprocessing) with
    BatchNorm statistics of one batch and random non-zero biases and betas."""
    keras.utils.set_random_seed(1)
    ref = getattr(keras.applications, constructor)(input_shape=(None, None, 3), include_top=False,
                                                    weights=None, include_preprocessing=True, **kwargs)
    rng = np.random.default_rng(2)
    norms = [layer for layer in ref.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        gamma, beta, mean, variance = layer.get_weights()
        layer.set_weights([1 + 0.2 * rng.normal(size=gamma.shape), 0.2 * rng.normal(size=beta.shape),
                           mean, variance])
        layer.momentum = 0.0
    ref(IMAGES, training=True)
    for layer in norms:
        layer.momentum = 0.999
    return ref


def _block_outputs(model, blocks):
    """Each block's output (its residual add, or its projection's BatchNorm) by block index."""
    outputs = []
    for i in range(blocks):
        prefix = f"expanded_conv_{i}_" if i else "expanded_conv_"
        names_here = {layer.name for layer in model.layers}
        outputs.append(model.get_layer(f"{prefix}add" if f"{prefix}add" in names_here else f"{prefix}project_bn").output)
    return outputs


@pytest.mark.parametrize("backbone", list(VARIANTS))
def test_every_kept_block_and_the_last_conv_match_keras_applications(backbone, tmp_path):
    constructor, output_stride, same_blocks, same_last_conv = VARIANTS[backbone]
    ref = _reference(constructor, **mobilenet.applications_arguments(backbone))
    path = tmp_path / f"{constructor}.weights.h5"
    ref.save_weights(path)
    ours = build_mobilenetv3(backbone, output_stride=output_stride)
    load_backbone_weights(ours, backbone, path)

    got = keras.Model(ours.input, _block_outputs(ours, same_blocks) + [ours.output[-1]])(IMAGES)
    want = keras.Model(ref.input, _block_outputs(ref, same_blocks) + [ref.output])(IMAGES)
    for i, (a, b) in enumerate(zip(got[:-1], want[:-1])):
        b = np.asarray(b)
        assert b.std() > 0.1, f"block {i} output is not of order 1 ({b.std():.2g})"
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3 * b.std(), err_msg=f"block {i}")
    if same_last_conv:
        np.testing.assert_allclose(got[-1], want[-1], rtol=1e-3, atol=1e-3 * np.std(want[-1]))
    elif backbone.endswith("cut16"):  # the deepest features are the stride-16 stage's output
        np.testing.assert_allclose(got[-1], want[same_blocks - 1], rtol=1e-3, atol=1e-3)
    # Every layer with weights either came from the file or is a reduced-tail layer (renamed).
    for layer in ours.layers:
        if layer.weights and not layer.name.startswith(NOT_PRETRAINED_PREFIX):
            for a, b in zip(layer.get_weights(), ref.get_layer(layer.name).get_weights(), strict=True):
                np.testing.assert_array_equal(a, b)


def test_the_reduced_tail_halves_the_last_stage_and_keeps_the_first_blocks_expansion():
    shapes = lambda m: {l.name: tuple(l.weights[0].shape) for l in m.layers if l.weights}
    large = shapes(build_mobilenetv3("mobilenetv3_large_reduced"))
    # torchvision's reduced tail: 112 -> 672 -> 80, then 80 -> 480 -> 80 twice, conv_1 80 -> 480.
    assert large["expanded_conv_12_expand"] == (1, 1, 112, 672)
    assert large["expanded_conv_12_squeeze_excite_conv_1"] == (1, 1, 168, 672)
    assert large[f"{NOT_PRETRAINED_PREFIX}expanded_conv_12_project"] == (1, 1, 672, 80)
    assert large[f"{NOT_PRETRAINED_PREFIX}expanded_conv_13_expand"] == (1, 1, 80, 480)
    assert large[f"{NOT_PRETRAINED_PREFIX}conv_1"] == (1, 1, 80, 480)
    small = shapes(build_mobilenetv3("mobilenetv3_small_reduced"))
    assert small[f"{NOT_PRETRAINED_PREFIX}expanded_conv_8_project"] == (1, 1, 288, 48)
    assert small[f"{NOT_PRETRAINED_PREFIX}conv_1"] == (1, 1, 48, 288)


@pytest.mark.parametrize("backbone, output_stride, channels", [
    ("mobilenetv3_large", 32, (24, 40, 112, 960)), ("mobilenetv3_large", 16, (24, 40, 112, 960)),
    ("mobilenetv3_large_reduced", 16, (24, 40, 112, 480)), ("mobilenetv3_large_cut16", 16, (24, 40, 112, 112)),
    ("mobilenetv3_small", 32, (16, 24, 48, 576)), ("mobilenetv3_small_reduced", 16, (16, 24, 48, 288)),
    ("mobilenetv3_small_minimal_cut16", 16, (16, 24, 48, 48)),
])
def test_skip_features_at_strides_4_8_16_and_the_deepest_at_the_output_stride(backbone, output_stride, channels):
    trunk = build_mobilenetv3(backbone, output_stride=output_stride, skip_strides=(4, 8, 16))
    outputs = trunk(np.zeros((1, 128, 192, 3), "float32"))
    for out, stride, c in zip(outputs, (4, 8, 16, output_stride), channels):
        assert tuple(out.shape) == (1, 128 // stride, 192 // stride, c)


def test_names_and_strides_are_what_the_module_implements():
    assert tuple(mobilenet.MOBILENETS) == names.MOBILENETS
    for backbone in names.MOBILENETS:
        for output_stride in names.BACKBONE_OUTPUT_STRIDES[backbone]:
            build_mobilenetv3(backbone, output_stride=output_stride)
    with pytest.raises(ValueError, match="mobilenetv3_small_reduced output_stride must be one of"):
        build_mobilenetv3("mobilenetv3_small_reduced", output_stride=32)
    with pytest.raises(ValueError, match="Unknown MobileNetV3 variant 'mobilenetv3_tiny'"):
        build_mobilenetv3("mobilenetv3_tiny")
