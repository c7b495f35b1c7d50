"""What a Keras (and keras-hub) user expects of the models: a loss on logits is refused for a
probability output, `model.backbone` is the trunk model, too small inputs are refused with a message."""

import keras
import numpy as np
import pytest

import synergyseg
from synergyseg.models.deeplab import DeepLabV3Plus
from synergyseg.models.lraspp import LRASPP

TINY = dict(backbone="resnet18", backbone_width=16, head_filters=8, low_level_filters=8)


@pytest.fixture(scope="module")
def model():
    return synergyseg.build_synergyseg(3, **TINY)


def _from_logits():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255)


@pytest.mark.parametrize("loss", ["single", "dict"])
def test_a_loss_on_logits_is_refused_at_compile(model, loss):
    two_scale = model if loss == "single" else model.with_fusion(scale_outputs=True)
    given = _from_logits() if loss == "single" else {"fused": _from_logits()}
    with pytest.raises(ValueError, match="from_logits=True.*outputs softmax probabilities"):
        two_scale.compile(loss=given)
    with pytest.raises(ValueError, match="from_logits=True.*outputs softmax probabilities"):
        two_scale.submodel.compile(optimizer="sgd", loss=given if loss == "single" else [_from_logits()])
    # On probabilities, the same loss is fine, and so are the recipe's and a loss given by name.
    two_scale.compile(loss=keras.losses.SparseCategoricalCrossentropy(ignore_class=255))
    two_scale.compile()
    two_scale.submodel.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
