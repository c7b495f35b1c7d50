import numpy as np
import pytest

import keras
from synergyseg import build_deeplabv3plus, build_synergyseg, submodel_of


@pytest.fixture(scope="module")
def notop_resnet50():
    """keras.applications' ResNet-50 "notop" with non-default weights, as users' ImageNet file."""
    model = keras.applications.ResNet50(weights=None, include_top=False)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.weights])
    return model


def _assert_trunk_equals(trunk, reference):
    checked = 0
    for layer in (l for l in trunk.layers if l.weights):
        for ours, theirs in zip(layer.weights, reference.get_layer(layer.name).weights):
            np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
            checked += 1
    assert checked == len(reference.weights) == 318


@pytest.mark.parametrize("filename", ["resnet50_notop.weights.h5", "resnet50_notop.h5"])
def test_loads_a_local_resnet50_notop_file_exactly(notop_resnet50, tmp_path, filename):
    path = tmp_path / filename
    if filename.endswith(".weights.h5"):
        notop_resnet50.save_weights(path)
    else:
        notop_resnet50.save(path)  # the legacy HDF5 layout of keras.applications' downloads
    model = build_synergyseg(19, backbone_weights=str(path))
    _assert_trunk_equals(submodel_of(model).get_layer("backbone"), notop_resnet50)


def test_small_trunk_loads_weights_saved_from_the_same_trunk(tmp_path):
    kwargs = dict(backbone="resnet18", backbone_width=8, head_filters=16, low_level_filters=8)
    source = build_deeplabv3plus(3, **kwargs).get_layer("backbone")
    source.set_weights([np.full(w.shape, i, "float32") for i, w in enumerate(source.weights)])
    path = tmp_path / "r18.weights.h5"
    source.save_weights(path)
    trunk = build_deeplabv3plus(3, backbone_weights=str(path), **kwargs).get_layer("backbone")
    for a, b in zip(trunk.weights, source.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bad_weight_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        build_deeplabv3plus(3, backbone_weights=str(tmp_path / "missing.h5"))
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not an hdf5 file")
    with pytest.raises(ValueError, match="junk.h5"):
        build_deeplabv3plus(3, backbone_weights=str(junk))
    wide = build_deeplabv3plus(3, backbone="resnet18", backbone_width=16, head_filters=16).get_layer("backbone")
    path = tmp_path / "r18_wide.weights.h5"
    wide.save_weights(path)
    with pytest.raises(ValueError, match="r18_wide.weights.h5"):
        build_deeplabv3plus(3, backbone="resnet18", backbone_width=8, backbone_weights=str(path))
