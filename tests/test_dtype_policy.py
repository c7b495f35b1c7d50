"""A model keeps the dtype policy it was built under: from its config and from its `.keras` file,
whatever the global policy is when it is rebuilt (DeepLabV3Plus, LRASPP, SynergySeg)."""

import keras
import numpy as np
import pytest

from synergyseg.models.deeplab import DeepLabV3Plus
from synergyseg.models.lraspp import LRASPP
from synergyseg.models.synergy import SynergySeg

POLICIES = ("float32", "mixed_float16")


def _deeplab():
    return DeepLabV3Plus(3, backbone="resnet18", backbone_width=16, head_filters=8, low_level_filters=8)


def _lraspp():
    return LRASPP(3, backbone="mobilenetv3_small", head_filters=8)


def _synergyseg():
    return SynergySeg(_deeplab())


BUILDERS = {"deeplab": _deeplab, "lraspp": _lraspp, "synergyseg": _synergyseg}


def _built_under(policy, build):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        return build()
    finally:
        keras.config.set_dtype_policy(previous)


def _compute_dtypes(model):
    """The compute dtype of the model's own layers that compute (a two-scale model's downsample, a
    submodel's classifier) and of its submodel's, if any."""
    own = model.get_layer("half_resolution" if isinstance(model, SynergySeg) else "classifier")
    dtypes = [own.compute_dtype]
    if isinstance(model, SynergySeg):
        dtypes.append(model.submodel.get_layer("classifier").compute_dtype)
    return dtypes


@pytest.mark.parametrize("kind", list(BUILDERS))
@pytest.mark.parametrize("policy", POLICIES)
def test_config_and_keras_file_keep_the_policy_the_model_was_built_under(kind, policy, tmp_path):
    model = _built_under(policy, BUILDERS[kind])
    expected = "float16" if policy == "mixed_float16" else "float32"
    assert model.dtype_policy.name == policy and set(_compute_dtypes(model)) == {expected}
    model.save(tmp_path / "model.keras")
    # Rebuilt under the other global policy: the model's own policy must win.
    other = POLICIES[1 - POLICIES.index(policy)]
    rebuilt = _built_under(other, lambda: type(model).from_config(model.get_config()))
    loaded = _built_under(other, lambda: keras.models.load_model(tmp_path / "model.keras", safe_mode=True))
    for again in (rebuilt, loaded):
        assert again.dtype_policy.name == policy
        assert set(_compute_dtypes(again)) == {expected}
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
