import numpy as np
import pytest

import keras
from synergyseg.models.resnet import build_resnet


def _dilation(model, name):
    return model.get_layer(name).dilation_rate[0]


@pytest.fixture(scope="module")
def applications_resnet50():
    return keras.applications.ResNet50(weights=None, include_top=False)


def test_resnet50_matches_keras_applications_names_shapes_and_outputs(applications_resnet50):
    ref = applications_resnet50
    ours = build_resnet("resnet50", output_stride=32)
    ours_shapes = {l.name: [tuple(w.shape) for w in l.weights] for l in ours.layers if l.weights}
    ref_shapes = {l.name: [tuple(w.shape) for w in l.weights] for l in ref.layers if l.weights}
    assert ours_shapes == ref_shapes
    assert ours.count_params() == ref.count_params() == 23_587_712
    # Same weights, undilated: the same function as keras.applications.ResNet50.
    for layer in ours.layers:
        if layer.weights:
            layer.set_weights(ref.get_layer(layer.name).get_weights())
    x = np.random.default_rng(0).normal(scale=50, size=(1, 45, 61, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(ours(x)[1]), np.asarray(ref(x)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "output_stride, c5_size, dilations",
    [
        # conv4 block1 / block2, conv5 block1 / block2 dilation rates of the 3x3 convs.
        (16, 5, (1, 1, 1, 2)),
        (8, 9, (1, 2, 2, 4)),
    ],
)
def test_output_stride_dilates_conv4_conv5(output_stride, c5_size, dilations):
    trunk = build_resnet("resnet50", output_stride=output_stride, width=8)
    names = ["conv4_block1_2_conv", "conv4_block2_2_conv", "conv5_block1_2_conv", "conv5_block2_2_conv"]
    assert tuple(_dilation(trunk, n) for n in names) == dilations
    low, high = trunk(np.zeros((1, 65, 70, 3), "float32"))
    assert low.shape == (1, 17, 18, 32)
    assert high.shape == (1, c5_size, 5 if output_stride == 16 else 9, 256)


def test_basic_block_trunks_and_bad_arguments():
    r18 = build_resnet("resnet18", output_stride=16)
    assert r18.count_params() == 11_190_912  # torchvision resnet18 without fc (11,176,512) + 4,800 conv biases + 9,600 BN moving stats
    low, high = r18(np.zeros((1, 33, 33, 3), "float32"))
    assert low.shape[-1] == 64 and high.shape[1:] == (3, 3, 512)
    with pytest.raises(ValueError, match="Unknown backbone 'resnet51'"):
        build_resnet("resnet51")
    with pytest.raises(ValueError, match="output_stride"):
        build_resnet("resnet50", output_stride=4)
