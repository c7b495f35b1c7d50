"""DeepLabV3+ as the README describes it: ASPP rates per output stride, tiny inputs, deep trunks."""

import keras
import numpy as np
import pytest

from synergyseg import build_deeplabv3plus, build_synergyseg

TINY = dict(backbone="resnet18", backbone_width=16, head_filters=16, low_level_filters=8)


@pytest.mark.parametrize("output_stride, rates", [(16, (6, 12, 18)), (8, (12, 24, 36))])
def test_aspp_rates_are_doubled_at_output_stride_8(output_stride, rates):
    model = build_deeplabv3plus(4, output_stride=output_stride, **TINY)
    atrous = sorted(layer.dilation_rate for layer in model.layers
                    if layer.name.startswith("aspp_rate") and layer.name.endswith("_conv"))
    assert atrous == [(r, r) for r in rates]
    pooled = model.get_layer("aspp_pool_1x1_conv")
    assert pooled.kernel_size == (1, 1)


def test_output_stride_8_runs_end_to_end_at_the_input_size():
    model = build_synergyseg(4, output_stride=8, scale_outputs=True, **TINY)
    images = np.random.default_rng(0).uniform(0, 255, (2, 41, 67, 3)).astype("float32")
    out = model.predict(images, verbose=0)
    assert out["fused"].shape == (2, 41, 67, 4)
    np.testing.assert_allclose(out["fused"].sum(-1), 1.0, atol=1e-5)
    # At output stride 8 the trunk's last features are 8x smaller than the input (rounded up).
    features = model.submodel.trunk(np.zeros((1, 64, 96, 3), "float32"))[1]
    assert features.shape[1:3] == (8, 12)


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (15, 15), (16, 9)])
def test_inputs_smaller_than_16_pixels_give_a_map_of_their_size(size):
    model = build_synergyseg(3, **TINY)
    images = np.random.default_rng(1).uniform(0, 255, (1, *size, 3)).astype("float32")
    probs = model.predict(images, verbose=0)
    assert probs.shape == (1, *size, 3)
    assert np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_resnet34_and_resnet101_build_and_resnet101_loads_keras_applications_weights(tmp_path):
    r34 = build_deeplabv3plus(19, backbone="resnet34")
    # ResNet-34 adds basic blocks of 64, 2x128, 4x256 and 512 channels to ResNet-18. torchvision
    # without fc: 21,284,672 - 11,176,512 = 10,108,160; Keras also counts each added block's two
    # conv biases and two BN moving mean/variance pairs: 6 x (64 + 256 + 1024 + 512) = 11,136.
    r18 = build_deeplabv3plus(19, backbone="resnet18")
    assert r34.trunk.count_params() - r18.trunk.count_params() == 10_108_160 + 11_136
    reference = keras.applications.ResNet101(weights=None, include_top=False)
    rng = np.random.default_rng(0)
    reference.set_weights([rng.normal(size=w.shape).astype("float32") for w in reference.weights])
    path = tmp_path / "resnet101_notop.weights.h5"
    reference.save_weights(path)
    model = build_deeplabv3plus(19, backbone="resnet101", backbone_weights=str(path))
    checked = 0
    for layer in (l for l in model.trunk.layers if l.weights):
        for ours, theirs in zip(layer.weights, reference.get_layer(layer.name).weights):
            np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
            checked += 1
    assert checked == len(reference.weights)
