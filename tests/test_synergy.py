import numpy as np
import pytest
import tensorflow as tf

import keras
from synergyseg import build_deeplabv3plus, build_synergyseg, submodel_of, with_fusion
from synergyseg.models.resize import Downsample
from tests.reference import all_layers, assert_save_load_round_trip, bilinear_resize, call, tiny_kwargs


@pytest.fixture(scope="module")
def tiny():
    return build_synergyseg(5, scale_outputs=True, **tiny_kwargs())


def _images(rng, shape):
    return rng.uniform(0, 255, size=shape).astype("float32")


def test_two_scale_model_shares_every_weight_with_one_deeplab():
    single = build_deeplabv3plus(5, **tiny_kwargs())
    for fusion in ("uncertainty", "average", "max"):
        model = build_synergyseg(5, fusion=fusion, **tiny_kwargs())
        assert model.count_params() == single.count_params()
        assert len(model.weights) == len(single.weights)
    attention = build_synergyseg(5, fusion="attention", **tiny_kwargs())
    fusion_params = attention.get_layer("fusion").count_params()
    assert fusion_params > 0
    assert attention.count_params() == single.count_params() + fusion_params


def test_paper_model_has_deeplabv3plus_r50_parameter_count():
    assert build_synergyseg(19).count_params() == build_deeplabv3plus(19).count_params() == 40_435_539


def test_gradients_reach_shared_weights_from_both_scales(tiny):
    rng = np.random.default_rng(0)
    x = tf.constant(_images(rng, (2, 32, 48, 3)))
    sub = submodel_of(tiny)
    first_conv = sub.get_layer("backbone").get_layer("conv1_conv").kernel
    grads = {}
    for branch in ("s_lo", "s_hi"):
        with tf.GradientTape() as tape:
            out = tiny(x, training=True)[branch]
            loss = tf.reduce_sum(out[..., 0] * tf.linspace(0.0, 1.0, 48))
        grads[branch] = tape.gradient(loss, first_conv)
        assert grads[branch] is not None and float(tf.reduce_max(tf.abs(grads[branch]))) > 0, branch
    # The branches see different images, so they push the shared kernel differently.
    assert not np.allclose(grads["s_lo"].numpy(), grads["s_hi"].numpy())


def test_low_scale_is_the_submodel_on_the_half_resolution_image(tiny):
    x = _images(np.random.default_rng(1), (1, 30, 42, 3))
    out = call(tiny, x)
    sub = submodel_of(tiny)
    s_lo = call(sub, np.asarray(Downsample(2)(x)))
    np.testing.assert_allclose(out["s_lo"], bilinear_resize(s_lo.astype("float64"), 30, 42), atol=1e-5)
    # The same ops in another graph: oneDNN may sum in another order (up to 1.5e-6 measured).
    np.testing.assert_allclose(out["s_hi"], call(sub, x), atol=5e-6)
    np.testing.assert_allclose(out["fused"].sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 33, 47, 3), (3, 20, 17, 3), (2, 64, 64, 3)])
def test_output_is_exactly_the_input_size(tiny, shape):
    out = call(tiny, _images(np.random.default_rng(2), shape))
    for key in ("fused", "s_lo", "s_hi"):
        assert out[key].shape == shape[:3] + (5,), key
    assert out["uncertainty"].shape == shape[:3] + (1,)


def test_fit_and_predict_on_datasets_of_unknown_size():
    # tf.data with (None, None) spatial dims makes every resize size dynamic inside the graphs.
    model = build_synergyseg(4, **tiny_kwargs())
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(ignore_class=255))
    rng = np.random.default_rng(3)
    sizes = [(21, 30), (26, 19)]

    def gen():
        for h, w in sizes:
            yield _images(rng, (2, h, w, 3)), rng.integers(0, 4, (2, h, w)).astype("int32")

    ds = tf.data.Dataset.from_generator(
        gen,
        output_signature=(
            tf.TensorSpec((None, None, None, 3), tf.float32),
            tf.TensorSpec((None, None, None), tf.int32),
        ),
    )
    history = model.fit(ds, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    for i, (h, w) in enumerate(sizes):  # one predict per size: predict concatenates its batches
        preds = model.predict(ds.map(lambda x, y: x).skip(i).take(1), verbose=0)
        assert preds.shape == (2, h, w, 4)


def test_uint8_and_float_images_give_the_same_prediction(tiny):
    x = np.random.default_rng(4).integers(0, 256, (1, 24, 24, 3)).astype("uint8")
    a = call(tiny, x)["fused"]
    b = call(tiny, x.astype("float32"))["fused"]
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_save_load_round_trip_with_safe_mode(tmp_path):
    x = _images(np.random.default_rng(5), (2, 27, 35, 3))
    for fusion in ("uncertainty", "attention"):
        model = build_synergyseg(5, fusion=fusion, **tiny_kwargs())
        loaded = assert_save_load_round_trip(model, x, tmp_path / f"{fusion}.keras")
        assert submodel_of(loaded).count_params() == submodel_of(model).count_params()
    assert_save_load_round_trip(with_fusion(model, scale_outputs=True), x, tmp_path / "dict.keras")
    for layer in all_layers(model):
        assert not isinstance(layer, keras.layers.Lambda)
        assert isinstance(layer.get_config(), dict)


def test_with_fusion_swaps_fusion_on_the_same_weights(tiny):
    x = _images(np.random.default_rng(6), (1, 26, 38, 3))
    out = call(tiny, x)
    average = call(with_fusion(tiny, "average"), x)
    np.testing.assert_allclose(average, 0.5 * (out["s_lo"] + out["s_hi"]), atol=1e-6)
    high = call(with_fusion(tiny, "high"), x)
    np.testing.assert_allclose(high, out["s_hi"], atol=1e-6)


def test_bad_arguments_and_inputs_say_what_was_expected(tiny):
    fresh = build_synergyseg(5, **tiny_kwargs())
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        build_synergyseg(1, **tiny_kwargs())
    with pytest.raises(ValueError, match="Unknown backbone 'vgg16'"):
        build_synergyseg(5, backbone="vgg16")
    with pytest.raises(ValueError, match="Unknown fusion 'sum'"):
        build_synergyseg(5, fusion="sum", **tiny_kwargs())
    with pytest.raises(ValueError, match="output_stride must be 8 or 16"):
        build_synergyseg(5, output_stride=32, **tiny_kwargs())
    with pytest.raises(Exception, match=r"\(None, None, None, 3\)|\[\?,\?,\?,3\]"):
        tiny.predict(np.zeros((1, 16, 16, 4), "float32"), verbose=0)
    with pytest.raises(Exception, match=r"\(None, None, None, 3\)|\[\?,\?,\?,3\]"):
        fresh.predict(np.zeros((16, 16, 3), "float32"), verbose=0)
    with pytest.raises(ValueError, match="not a SynergySeg model: expected one shared submodel"):
        submodel_of(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))


def test_real_resnet50_two_scale_trains_one_step_at_small_resolution():
    model = build_synergyseg(19)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(ignore_class=255),
        metrics=None,  # SynergySeg.compile's "auto" would add the paper's MeanIoU
        # One step: eager runs it without tracing the two-scale ResNet-50 training graph (~4x faster).
        run_eagerly=True,
    )
    rng = np.random.default_rng(7)
    x = _images(rng, (2, 65, 97, 3))
    y = rng.integers(0, 19, (2, 65, 97)).astype("int32")
    y[:, :10] = 255
    before = submodel_of(model).get_layer("classifier").kernel.numpy().copy()
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    assert not np.allclose(submodel_of(model).get_layer("classifier").kernel.numpy(), before)
    probs = call(model, x)
    assert probs.shape == (2, 65, 97, 19)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_mixed_precision_model_still_outputs_float32_probabilities():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_synergyseg(5, scale_outputs=True, fusion="attention", **tiny_kwargs())
    finally:
        keras.mixed_precision.set_global_policy(previous)
    out = call(model, _images(np.random.default_rng(8), (1, 24, 40, 3)))
    for key, value in out.items():
        assert value.dtype == np.float32, key
    np.testing.assert_allclose(out["fused"].sum(-1), 1.0, atol=1e-5)
    # The trunk really runs in float16: the point of the policy.
    assert submodel_of(model).get_layer("backbone").get_layer("conv1_conv").compute_dtype == "float16"


# --- fusion on the head's grid (fuse_at="decoder") ------------------------------------------

def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _numpy_fusion(name, up_lo, s_hi):
    """Each weightless fusion of fusion.py on maps of one size (U is then the identity)."""
    if name == "uncertainty":
        s = up_lo + s_hi * (1 - up_lo)
    elif name == "uncertainty_confidence":
        s = up_lo + s_hi * (1 - up_lo.max(-1, keepdims=True))
    elif name == "low":
        return up_lo
    elif name == "high":
        return s_hi
    elif name == "average":
        return 0.5 * (up_lo + s_hi)
    else:
        s = np.maximum(up_lo, s_hi)
    return s / s.sum(-1, keepdims=True)


@pytest.fixture(scope="module")
def decoder_model():
    return build_synergyseg(5, scale_outputs=True, fuse_at="decoder", **tiny_kwargs())


@pytest.mark.parametrize("fusion", ["uncertainty", "uncertainty_confidence", "low", "high", "average", "max"])
def test_decoder_fusion_matches_a_numpy_reference_on_the_high_scale_grid(decoder_model, fusion):
    model = decoder_model.with_fusion(fusion, scale_outputs=True)
    x = _images(np.random.default_rng(9), (2, 38, 54, 3))
    out = call(model, x)
    logits = submodel_of(model).logits_model()
    # The submodel's logits on each scale's own grid, computed apart from the two-scale graph.
    z_hi = call(logits, x).astype("float64")
    z_lo = call(logits, np.asarray(Downsample(2)(x))).astype("float64")
    assert z_hi.shape[1:3] == (10, 14) and z_lo.shape[1:3] == (5, 7)  # stride 4 of 38x54 and 19x27
    s_lo = _softmax(bilinear_resize(z_lo, *z_hi.shape[1:3]))  # resized to the high grid, then softmax
    s_hi = _softmax(z_hi)
    up = lambda s: bilinear_resize(s, 38, 54)  # one upsample to the input size
    np.testing.assert_allclose(out["fused"], up(_numpy_fusion(fusion, s_lo, s_hi)), atol=2e-5)
    np.testing.assert_allclose(out["s_lo"], up(s_lo), atol=2e-5)
    np.testing.assert_allclose(out["s_hi"], up(s_hi), atol=2e-5)
    np.testing.assert_allclose(out["uncertainty"], up(1 - s_lo.max(-1, keepdims=True)), atol=2e-5)
    # Same output contract as fuse_at="input": a distribution per pixel at the input size.
    np.testing.assert_allclose(out["fused"].sum(-1), 1.0, atol=1e-5)


def test_decoder_fusion_saves_loads_with_safe_mode_and_says_where_it_fuses(decoder_model, tmp_path):
    x = _images(np.random.default_rng(10), (1, 30, 42, 3))
    served = decoder_model.with_fusion()
    assert served.fuse_at == "decoder" and served.get_config()["fuse_at"] == "decoder"
    loaded = assert_save_load_round_trip(served, x, tmp_path / "decoder.keras")
    assert loaded.fuse_at == "decoder" and loaded.get_config()["fuse_at"] == "decoder"
    loaded = assert_save_load_round_trip(decoder_model, x, tmp_path / "decoder_dict.keras")
    assert loaded.scale_outputs and loaded.fuse_at == "decoder"
    # Both resolutions on one set of weights; a file of an older version (no fuse_at) fuses at input.
    at_input = served.with_fusion(fuse_at="input")
    assert at_input.fuse_at == "input" and at_input.count_params() == served.count_params()
    config = served.get_config()
    del config["fuse_at"]
    assert type(served).from_config(config).fuse_at == "input"


def test_decoder_single_scale_skips_the_low_scale_and_bad_fuse_at_is_refused(decoder_model):
    single = decoder_model.with_fusion("high")
    assert not any(isinstance(layer, Downsample) for layer in single.layers)
    x = _images(np.random.default_rng(11), (1, 26, 34, 3))
    np.testing.assert_allclose(call(single, x),
                               call(decoder_model, x)["s_hi"], atol=1e-6)
    with pytest.raises(ValueError, match=r"fuse_at must be one of \('input', 'decoder'\), got 'logits'"):
        decoder_model.with_fusion(fuse_at="logits")
    # (gated inference takes decoder-fused models through with_fusion(fuse_at="input"): test_gated.py)
