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


def test_backbone_is_the_shared_trunk_model_and_freezing_it_keeps_its_weights():
    model = synergyseg.build_synergyseg(3, **TINY)
    assert isinstance(model.backbone, keras.Model) and model.backbone is model.submodel.get_layer("backbone")
    assert (model.backbone_name, model.submodel.backbone_name) == ("resnet18", "resnet18")
    trunk_ids = {id(w) for w in model.backbone.trainable_weights}
    assert trunk_ids and trunk_ids <= {id(w) for w in model.trainable_weights}

    model.backbone.trainable = False  # keras-hub's way to fine-tune the head alone
    trainable = {id(w) for w in model.trainable_weights}
    assert not {id(w) for w in model.backbone.weights} & trainable and trainable  # the head still trains
    before = [w.numpy().copy() for w in model.backbone.weights]
    x = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    model(x, training=True)  # a frozen trunk's batch norm uses (and keeps) its moving statistics
    for a, w in zip(before, model.backbone.weights):
        np.testing.assert_array_equal(a, w.numpy())
    model.backbone.trainable = True
    assert trunk_ids <= {id(w) for w in model.trainable_weights}


@pytest.mark.parametrize("backbone, output_stride", [("mobilenetv3_small", 32), ("mobilenetv3_large_cut16", 16)])
def test_images_below_the_smallest_size_are_refused_with_a_message(backbone, output_stride):
    model = synergyseg.build_synergyseg(3, backbone=backbone, output_stride=output_stride, head="lraspp",
                                        fuse_at="decoder")
    smallest = 2 * output_stride  # two scales: the half-resolution branch sees half of each side
    assert (model.min_input_size, model.with_fusion("high").min_input_size) == (smallest, output_stride)
    x = np.random.default_rng(0).uniform(0, 255, (1, smallest, smallest + 7, 3)).astype("float32")
    assert np.isfinite(np.asarray(model(x))).all()
    too_small = x[:, : smallest * 3 // 4]
    # The unchecked graph (same layers) fails or returns NaN there: the refusal is not arbitrary.
    graph = keras.Model(model.inputs, model.outputs)
    try:
        out = np.asarray(graph(too_small))
        assert not np.isfinite(out).all()
    except Exception as e:  # TensorFlow's own error, deep inside the trunk
        assert "at least" not in str(e)
    for run in (model, lambda y: model.predict(y, verbose=0)):
        with pytest.raises(ValueError, match=rf"at least {smallest}x{smallest} pixels.*got {smallest * 3 // 4}x"):
            run(too_small)
    single = model.with_fusion("high")
    assert np.isfinite(np.asarray(single(x[:, :output_stride, :output_stride]))).all()
    from synergyseg.export import check_tflite_size

    with pytest.raises(ValueError, match=rf"at least {smallest}(?!\d)"):
        check_tflite_size((smallest - 1, 256), model)
    assert check_tflite_size((smallest, smallest), model) == (smallest, smallest)
