"""What a Keras (and keras-hub) user expects of the models: a loss on logits is refused for a
probability output, `model.backbone` is the trunk model, too small inputs are refused with a message."""

import keras
import numpy as np
import pytest

import synergyseg

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


def _runs(graph, height, width):
    """Whether the unchecked graph maps a height x width image: Keras's own shape inference accepts
    every layer (below the bound a stride-2 conv of the trunk gets a map smaller than its kernel),
    and the map it returns is finite. (Shape inference, not the eager call, decides: on a CPU with
    AVX-512, oneDNN's eager conv returned a map of the wrong size there instead of failing.)"""
    try:
        graph.compute_output_spec(keras.KerasTensor((1, height, width, 3)))
    except ValueError as e:
        assert "zero or negative" in str(e)
        return False
    x = np.random.default_rng(0).uniform(0, 255, (1, height, width, 3)).astype("float32")
    return bool(np.isfinite(np.asarray(graph(x))).all())


@pytest.mark.parametrize("backbone, output_stride", [("mobilenetv3_small", 32), ("mobilenetv3_large_cut16", 16),
                                                     ("mobilenetv3_small_minimal", 32)])
def test_images_below_the_smallest_size_are_refused_with_a_message(backbone, output_stride):
    model = synergyseg.build_synergyseg(3, backbone=backbone, output_stride=output_stride, head="lraspp",
                                        fuse_at="decoder")
    single = model.with_fusion("high")
    smallest = model.min_input_size
    # The bound is exact: the same layers without the check (keras.Model on the model's graph)
    # run at the smallest size, in either dimension alone, and cannot one pixel below.
    for net, side in ((model, smallest), (single, single.min_input_size)):
        graph = keras.Model(net.inputs, net.outputs)
        assert _runs(graph, side, side + 7) and _runs(graph, side + 5, side)
        assert not _runs(graph, side - 1, side + 7) and not _runs(graph, side + 5, side - 1)
    # Independently of the code: a MobileNetV3 trunk needs output_stride - 1 pixels, and the
    # half-resolution branch sees ceil(side / 2) of a side.
    assert (single.min_input_size, smallest) == (output_stride - 1, 2 * output_stride - 3)
    x = np.random.default_rng(0).uniform(0, 255, (1, smallest - 1, smallest + 7, 3)).astype("float32")
    for run in (model, lambda y: model.predict(y, verbose=0)):
        with pytest.raises(ValueError, match=rf"at least {smallest}x{smallest} pixels.*got {smallest - 1}x"):
            run(x)
    from synergyseg.export.tflite import MIN_TFLITE_SIZE, check_tflite_size

    tflite_smallest = max(smallest, MIN_TFLITE_SIZE)
    with pytest.raises(ValueError, match=rf"at least {tflite_smallest}(?!\d)"):
        check_tflite_size((tflite_smallest - 1, 256), model)
    assert check_tflite_size((tflite_smallest, tflite_smallest), model) == (tflite_smallest,) * 2



def test_one_input_name_in_keras_and_in_every_exported_signature(model):
    # The exported signatures' name (SavedModel, TFLite, ONNX: test_export.py reads their inputs
    # by it) is the Keras models' too: the two-scale model, its submodel, the light head and a
    # MobileNetV3 trunk, a model loaded back from its config, and the serving model.
    from synergyseg.export import build_serving_model
    from synergyseg.models.mobilenet import build_mobilenetv3

    light = synergyseg.build_synergyseg(3, backbone="mobilenetv3_small_minimal", head="lraspp",
                                        output_stride=32, fuse_at="decoder")
    for keras_model in (model, model.submodel, model.with_fusion("average"),
                        synergyseg.SynergySeg.from_config(model.get_config()), light, light.submodel,
                        build_mobilenetv3("mobilenetv3_small_minimal", 32), build_serving_model(model)):
        assert [tensor.name for tensor in keras_model.inputs] == ["images"], keras_model.name
