"""LR-ASPP (MobileNetV3 paper, section 6.4): its logits against numpy, on MobileNetV3 and ResNet trunks."""

import numpy as np
import pytest
import keras

import synergyseg
from synergyseg.models.lraspp import LRASPP, build_lraspp
from synergyseg.models.preprocessing import ImageNetNormalization
from tests.reference import all_layers, assert_save_load_round_trip, bilinear_resize, call


def _images(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, shape).astype("float32")


def _randomize(model, seed=0):
    """Random weights everywhere, BatchNorm variances positive, so every term of the head shows."""
    rng = np.random.default_rng(seed)
    for layer in all_layers(model):
        if layer.weights and not isinstance(layer, keras.Model):
            layer.set_weights([(0.1 * rng.normal(size=w.shape) + (w.name == "moving_variance") * 1.5)
                               .astype("float32") for w in layer.weights])


def _numpy_head(model, skip, deep):
    """LR-ASPP from its layers' weights, in numpy: the reference for the model's logits."""
    def conv1x1(x, layer):
        weights = layer.get_weights()
        y = x @ weights[0][0, 0]
        return y + weights[1] if len(weights) > 1 else y

    gamma, beta, mean, variance = model.get_layer("lraspp_bn").get_weights()
    epsilon = model.get_layer("lraspp_bn").epsilon
    x = conv1x1(deep, model.get_layer("lraspp_conv"))
    x = np.maximum((x - mean) / np.sqrt(variance + epsilon) * gamma + beta, 0)
    gate = conv1x1(deep.mean(axis=(1, 2), keepdims=True), model.get_layer("lraspp_gate_conv"))
    x = x * (1 / (1 + np.exp(-gate)))
    x = bilinear_resize(x, *skip.shape[1:3])
    return conv1x1(x, model.get_layer("classifier")) + conv1x1(skip, model.get_layer("skip_classifier"))


@pytest.mark.parametrize("kwargs", [
    dict(backbone="mobilenetv3_small", output_stride=32),
    dict(backbone="resnet18", backbone_width=8, output_stride=16),
])
def test_logits_match_a_numpy_lraspp_on_the_stride_8_skip(kwargs):
    keras.utils.set_random_seed(0)
    model = LRASPP(4, head_filters=8, **kwargs)
    _randomize(model)
    images = _images((2, 75, 101, 3))
    logits = call(model.logits_model(), images)
    # The trunk alone (ResNets take ImageNet-normalized images, MobileNetV3 raw RGB).
    trunk_in = np.asarray(ImageNetNormalization()(images)) if kwargs["backbone"].startswith("resnet") else images
    skip, deep = (t.astype("float64") for t in call(model.trunk, trunk_in))
    # Stride 8: 10x13 for ResNet's "same" padding, 9x12 for keras.applications' MobileNetV3 (floor).
    assert skip.shape[1:3] == logits.shape[1:3] in ((10, 13), (9, 12))
    assert logits.std() > 0.1  # of order 1: a wrong term would show
    np.testing.assert_allclose(logits, _numpy_head(model, skip, deep), rtol=1e-4, atol=1e-4)
    # The model's output: those logits upsampled to the input size, softmax.
    z = bilinear_resize(logits.astype("float64"), 75, 101)
    expected = np.exp(z - z.max(-1, keepdims=True))
    np.testing.assert_allclose(call(model, images), expected / expected.sum(-1, keepdims=True),
                               atol=1e-5)


def test_the_gate_is_a_broadcast_multiply_not_a_resized_map():
    model = LRASPP(3, backbone="mobilenetv3_small", head_filters=8)
    gated = model.get_layer("lraspp_gated")
    assert isinstance(gated, keras.layers.Multiply)
    assert [tuple(t.shape) for t in gated.input] == [(None, None, None, 8), (None, 1, 1, 8)]


def test_config_save_and_load_with_safe_mode(tmp_path):
    model = build_lraspp(3, backbone="mobilenetv3_large_cut16", head_filters=8)
    assert (model.backbone_name, model.output_stride, model.head, model.logits_stride) == (
        "mobilenetv3_large_cut16", 16, "lraspp", 8)
    loaded = assert_save_load_round_trip(model, _images((1, 40, 56, 3)), tmp_path / "lraspp.keras")
    assert isinstance(loaded, LRASPP) and loaded.get_config() == model.get_config()
    two_scale = synergyseg.build_synergyseg(3, backbone="mobilenetv3_small", head="lraspp",
                                            head_filters=8, fuse_at="decoder")
    loaded = assert_save_load_round_trip(two_scale, _images((1, 40, 56, 3)), tmp_path / "two.keras")
    assert (loaded.head, loaded.backbone_name, loaded.fuse_at) == ("lraspp", "mobilenetv3_small", "decoder")


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        LRASPP(1)
    with pytest.raises(ValueError, match="LR-ASPP output_stride must be 16 only with backbone='mobilenetv3_large_cut16'"):
        LRASPP(3, backbone="mobilenetv3_large_cut16", output_stride=32)
    with pytest.raises(ValueError, match="Unknown head 'fcn'"):
        synergyseg.build_synergyseg(3, head="fcn")
