"""Gated inference (synergyseg/models/gated.py) against a numpy loop over tiles and the two-scale model."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import keras

import evaluate
import synergyseg
from synergyseg.data import SYNTHETIC, decode_example, synthetic
from synergyseg.export.tflite import make_interpreter, undelegated_ops
from synergyseg.models.gated import (
    GATE, GatedSynergySeg, gated_synergyseg, select_tiles, tile_scores, tiles_selected)
from synergyseg.models.names import FUSED, S_LO, UNCERTAINTY
from reference import all_layers, assert_save_load_round_trip, bilinear_resize, tiny_kwargs
from test_rewrite import randomize_batchnorm

NUM_CLASSES = 4


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(3)
    return synergyseg.build_synergyseg(NUM_CLASSES, **tiny_kwargs())


def images(batch, height, width, seed=0):
    rng = np.random.default_rng(seed)
    return tf.constant(rng.uniform(0, 255, (batch, height, width, 3)).astype("float32"))


def numpy_tile_scores(u, tile):
    b, h, w = u.shape
    rows, cols = -(-h // tile), -(-w // tile)
    out = np.zeros((b, rows, cols))
    for i in range(rows):
        for j in range(cols):
            out[:, i, j] = np.sqrt((u[:, i * tile:(i + 1) * tile, j * tile:(j + 1) * tile] ** 2).mean(axis=(1, 2)))
    return out


def numpy_gated(model, x, tile, margin, fraction, pooling="tile"):
    """Gated eq. 1 by loops: low scale, tile scores (root mean square), top tiles, one window per tile, crop, paste.
    With `pooling="low"` each window's ASPP image pooling is the low-scale image's pooled trunk
    features (the submodel's views, checked against it in test_pooled_context_views_...)."""
    x = np.asarray(x)
    b, h, w, _ = x.shape
    sub = model.submodel
    x_lo = bilinear_resize(x, -(-h // 2), -(-w // 2)).astype("float32")
    s_lo = np.asarray(sub(x_lo))
    if pooling == "low":
        with_context, given_context = sub.pooled_context_models()
        context = np.asarray(with_context(x_lo)[1])
        high = lambda i, window: given_context([window, context[i:i + 1]])  # noqa: E731
    else:
        high = lambda i, window: sub(window)  # noqa: E731
    up_lo = bilinear_resize(s_lo, h, w)
    uncertainty = bilinear_resize(1.0 - s_lo.max(-1, keepdims=True), h, w)[..., 0]  # U(1 - max_c S_lo)
    scores = numpy_tile_scores(uncertainty, tile).reshape(b, -1)
    cols = -(-w // tile)
    count = int(np.floor(fraction * scores.shape[1] + 0.5))
    out, gate = up_lo.copy(), np.zeros((b, h, w))
    win_h, win_w = min(tile + 2 * margin, h), min(tile + 2 * margin, w)
    for i in range(b):
        for t in np.argsort(-scores[i], kind="stable")[:count]:
            y, x0 = (t // cols) * tile, (t % cols) * tile
            wy, wx = min(max(y - margin, 0), h - win_h), min(max(x0 - margin, 0), w - win_w)
            s_hi = np.asarray(high(i, x[i:i + 1, wy:wy + win_h, wx:wx + win_w]))[0]
            ys, xs = slice(y, min(y + tile, h)), slice(x0, min(x0 + tile, w))
            hi = s_hi[y - wy:y - wy + ys.stop - y, x0 - wx:x0 - wx + xs.stop - x0]
            lo = up_lo[i, ys, xs]
            fused = lo + hi * (1.0 - lo)  # eq. 1, then normalized over classes
            out[i, ys, xs] = fused / fused.sum(-1, keepdims=True)
            gate[i, ys, xs] = 1
    return out, gate, up_lo, uncertainty


# The tiling and paste are checked to 1e-6 on the submodel itself (inference_rewrites=False); the
# rewritten passes differ from it by float32 rounding, checked to 1e-5 on their own below.
def test_one_tile_without_margin_equals_the_two_scale_model(model):
    x = images(2, 40, 56)
    gated = gated_synergyseg(model, tile_size=64, margin=0, fraction=1.0, pooling="tile", inference_rewrites=False)
    np.testing.assert_allclose(np.asarray(gated(x)), np.asarray(model(x)), atol=1e-6)


@pytest.mark.parametrize("fusion", ["max", "uncertainty_confidence"])  # on the tiles; on the whole image
def test_one_tile_equals_the_two_scale_model_with_another_fusion(model, fusion):
    x = images(1, 33, 47)
    two_scale = model.with_fusion(fusion)
    gated = gated_synergyseg(two_scale, tile_size=48, margin=0, fraction=1.0, pooling="tile",
                             inference_rewrites=False)
    np.testing.assert_allclose(np.asarray(gated(x)), np.asarray(two_scale(x)), atol=1e-6)


def test_a_decoder_fused_model_is_gated_as_its_input_fused_form():
    """LR-ASPP fused at the decoder: the tiles need full-size per-scale maps, so the gated model is
    `with_fusion(fuse_at="input")` of the same weights. A margin that makes every window the whole
    image gives each of the 6 tiles the whole image's context: at fraction 1 the paste of all
    tiles is that model, probabilities and class map."""
    keras.utils.set_random_seed(4)
    decoder = randomize_batchnorm(synergyseg.build_synergyseg(
        NUM_CLASSES, backbone="mobilenetv3_small", head="lraspp", head_filters=8, fuse_at="decoder"), 4)
    x = images(2, 40, 56, seed=8)
    gated = gated_synergyseg(decoder, tile_size=24, margin=20, fraction=1.0, pooling="tile", scale_outputs=True)
    out = gated(x)
    assert np.asarray(out[GATE]).min() == 1 and tiles_selected(40, 56, tile_size=24, fraction=1.0) == 6
    expected = np.asarray(decoder.with_fusion(fuse_at="input")(x))
    np.testing.assert_allclose(np.asarray(out[FUSED]), expected, atol=1e-5)  # the rewritten passes
    np.testing.assert_array_equal(np.asarray(out[FUSED]).argmax(-1), expected.argmax(-1))
    # Not the decoder-fused model's map (fused on the stride-8 grid), which gating does not reproduce.
    assert np.abs(np.asarray(decoder(x)) - expected).max() > 1e-3
    # Fewer tiles gate too: the high scale on the most uncertain half.
    half = gated_synergyseg(decoder, tile_size=16, margin=4, fraction=0.5, pooling="tile", scale_outputs=True)(x)
    assert np.asarray(half[GATE]).mean() == pytest.approx(0.5, abs=0.15)


@pytest.mark.parametrize("pooling", ["low", "tile"])
def test_inference_rewrites_are_exact_and_fold_and_trim_the_passes(pooling):
    """BatchNorm statistics set to random values (a wrong fold moves the output); 48-px windows are
    a 3x3 map at stride 16, where every ASPP rate reads only its centre tap."""
    keras.utils.set_random_seed(6)
    two_scale = randomize_batchnorm(synergyseg.build_synergyseg(NUM_CLASSES, **tiny_kwargs()), 3)
    knobs = dict(tile_size=32, margin=8, fraction=0.5, pooling=pooling, scale_outputs=True)
    rewritten = gated_synergyseg(two_scale, **knobs)
    plain = gated_synergyseg(two_scale, inference_rewrites=False, **knobs)
    assert plain.low_pass is (plain.low_scale if pooling == "low" else two_scale.submodel)
    for part in (rewritten.low_pass, rewritten.tile_pass):
        assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in all_layers(part))
    assert rewritten.tile_pass.get_layer("aspp_rate18_conv").kernel_size == (1, 1)
    assert rewritten.low_pass.get_layer("aspp_rate18_conv").kernel_size == (3, 3)  # any image size
    x = images(2, 45, 70, seed=3)
    got, expected = rewritten(x), plain(x)
    np.testing.assert_array_equal(np.asarray(got[GATE]), np.asarray(expected[GATE]))
    assert 0 < np.asarray(got[GATE]).mean() < 1
    for key in (FUSED, S_LO, UNCERTAINTY):
        np.testing.assert_allclose(np.asarray(got[key]), np.asarray(expected[key]), atol=1e-5, err_msg=key)


def test_uncertainty_means_the_same_in_the_gated_and_the_two_scale_model(model):
    """Both output U(1 - max_c S_lo), the low scale's uncertainty upsampled (the paper's Fig. 1 mask)."""
    x = images(2, 33, 47, seed=7)
    s_lo = np.asarray(model.submodel(bilinear_resize(np.asarray(x), 17, 24).astype("float32")))
    expected = bilinear_resize(1.0 - s_lo.max(-1, keepdims=True), 33, 47)
    two_scale = model.with_fusion(scale_outputs=True)(x)[UNCERTAINTY]
    gated = gated_synergyseg(model, fraction=0.5, pooling="tile", scale_outputs=True)(x)[UNCERTAINTY]
    np.testing.assert_allclose(np.asarray(two_scale), expected, atol=1e-5)
    np.testing.assert_allclose(np.asarray(gated), expected, atol=1e-5)


def test_tile_scores_are_root_mean_squares_with_cut_edge_tiles():
    u = np.random.default_rng(1).uniform(size=(2, 37, 50)).astype("float32")
    np.testing.assert_allclose(np.asarray(tile_scores(tf.constant(u), 16)), numpy_tile_scores(u, 16), rtol=1e-5)


SCORES = np.array([[0.10, 0.70, 0.30, 0.90, 0.50, 0.20],
                   [0.60, 0.05, 0.80, 0.40, 0.35, 0.95]], "float32")


def selected(**knobs):
    image, tile = select_tiles(tf.constant(SCORES), **knobs)
    return sorted(zip(np.asarray(image).tolist(), np.asarray(tile).tolist()))


def test_a_fraction_selects_the_most_uncertain_tiles_of_each_image():
    assert selected(fraction=0.5) == [(0, 1), (0, 3), (0, 4), (1, 0), (1, 2), (1, 5)]
    assert selected(fraction=0.25) == [(0, 1), (0, 3), (1, 2), (1, 5)]  # 1.5 tiles round up to 2
    assert selected(fraction=0.0) == []
    assert selected(fraction=1.0) == [(i, t) for i in range(2) for t in range(6)]
    assert selected(fraction=1.0, max_tiles=1) == [(0, 3), (1, 5)]


def test_a_threshold_selects_the_tiles_above_it():
    assert selected(threshold=0.45) == [(0, 1), (0, 3), (0, 4), (1, 0), (1, 2), (1, 5)]
    assert selected(threshold=0.75) == [(0, 3), (1, 2), (1, 5)]
    assert selected(threshold=0.75, max_tiles=1) == [(0, 3), (1, 5)]
    assert selected(threshold=0.99) == []


@pytest.mark.parametrize("height,width,tile,margin,fraction", [
    (45, 70, 16, 8, 0.4),  # odd sizes, not divisible by the tile: cut edge tiles
    (64, 64, 32, 16, 0.5),
    (40, 50, 64, 8, 1.0),  # the tile is larger than the image
])
def test_gated_matches_a_numpy_loop_over_tiles(model, height, width, tile, margin, fraction):
    x = images(2, height, width, seed=height)
    gated = gated_synergyseg(model, tile_size=tile, margin=margin, fraction=fraction, pooling="tile",
                             scale_outputs=True)
    out = gated(x)
    expected, gate, up_lo, uncertainty = numpy_gated(model, x, tile, margin, fraction)
    np.testing.assert_array_equal(np.asarray(out[GATE])[..., 0], gate)
    np.testing.assert_allclose(np.asarray(out[S_LO]), up_lo, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out[UNCERTAINTY])[..., 0], uncertainty, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out[FUSED]), expected, atol=1e-5)
    # Unselected pixels are the low scale's prediction.
    unselected = gate == 0
    np.testing.assert_allclose(np.asarray(out[FUSED])[unselected], up_lo[unselected], atol=1e-5)
    assert 0 < gate.mean() <= 1


@pytest.mark.parametrize("trunk", ["resnet", "mobilenet"])
def test_low_pooling_on_selected_tiles_matches_the_numpy_loop(model, trunk):
    # The tiles' ASPP pooling reads the low scale's whole-image features: checked by value on the
    # selected tiles (not only at fraction 1), for a ResNet and a MobileNetV3 trunk, BatchNorm
    # statistics random so the folded passes are checked too.
    if trunk == "mobilenet":
        keras.utils.set_random_seed(4)
        model = randomize_batchnorm(synergyseg.build_synergyseg(
            NUM_CLASSES, backbone="mobilenetv3_small_minimal_cut16", head_filters=8, low_level_filters=8), 5)
    x = images(2, 64, 96, seed=11)
    gated = gated_synergyseg(model, tile_size=32, margin=8, fraction=0.34, pooling="low", scale_outputs=True)
    out = gated(x)
    expected, gate, up_lo, _ = numpy_gated(model, x, 32, 8, 0.34, pooling="low")
    np.testing.assert_array_equal(np.asarray(out[GATE])[..., 0], gate)
    assert 0 < gate.mean() < 1  # 2 of 6 tiles per image
    np.testing.assert_allclose(np.asarray(out[FUSED]), expected, atol=1e-5)
    # Where the tiles ran, per-tile pooling gives another answer: the low context is used.
    tile_pooled, _, _, _ = numpy_gated(model, x, 32, 8, 0.34, pooling="tile")
    assert np.abs(tile_pooled - expected)[gate == 1].max() > 1e-3


def test_batch_members_are_gated_independently(model):
    x = images(3, 48, 80, seed=7)
    gated = gated_synergyseg(model, tile_size=16, margin=8, threshold=0.3)
    together = np.asarray(gated(x))
    for i in range(3):
        np.testing.assert_allclose(together[i], np.asarray(gated(x[i:i + 1]))[0], atol=1e-5)


@pytest.mark.parametrize("pooling", ["low", "tile"])
def test_fraction_zero_is_the_low_scale_and_one_covers_every_pixel(model, pooling):
    x = images(2, 37, 61, seed=5)
    low = gated_synergyseg(model, tile_size=16, margin=4, fraction=0.0, pooling=pooling, scale_outputs=True)(x)
    up_lo = bilinear_resize(np.asarray(model.submodel(bilinear_resize(np.asarray(x), 19, 31).astype("float32"))),
                            37, 61)
    np.testing.assert_allclose(np.asarray(low[FUSED]), up_lo, atol=1e-5)
    assert np.asarray(low[GATE]).max() == 0
    full = gated_synergyseg(model, tile_size=16, margin=4, fraction=1.0, pooling=pooling, scale_outputs=True)(x)
    assert np.asarray(full[GATE]).min() == 1
    assert tiles_selected(37, 61, tile_size=16, fraction=1.0) == 3 * 4


def test_pooled_context_views_reproduce_the_submodel(model):
    x = images(2, 48, 64, seed=2)
    with_context, given_context = model.submodel.pooled_context_models()
    probabilities, context = with_context(x)
    assert tuple(context.shape) == (2, 1, 1, tiny_kwargs()["backbone_width"] * 8)
    np.testing.assert_allclose(np.asarray(probabilities), np.asarray(model.submodel(x)), atol=1e-6)
    np.testing.assert_allclose(np.asarray(given_context([x, context])), np.asarray(probabilities), atol=1e-6)
    # The context is used: another image's context changes the answer.
    other = tf.reverse(context, [0])
    assert np.abs(np.asarray(given_context([x, other])) - np.asarray(probabilities)).max() > 1e-4


@pytest.mark.parametrize("knobs,message", [
    (dict(tile_size=8), "tile_size"),
    (dict(tile_size=32, margin=32), "margin"),
    (dict(margin=-1), "margin"),
    (dict(fraction=-0.1), "fraction"),
    (dict(fraction=1.5), "fraction"),
    (dict(threshold=2.0), "threshold"),
    (dict(fraction=0.5, threshold=0.5), "not both"),
    (dict(max_tiles=-1), "max_tiles"),
    (dict(pooling="image"), "pooling"),
])
def test_bad_knobs_are_refused(model, knobs, message):
    with pytest.raises(ValueError, match=message):
        gated_synergyseg(model, **knobs)


def test_save_and_load_with_safe_mode(model, tmp_path):
    gated = gated_synergyseg(model, tile_size=16, margin=4, threshold=0.2, max_tiles=3, pooling="low")
    loaded = assert_save_load_round_trip(gated, images(2, 40, 48).numpy(), str(tmp_path / "gated.keras"))
    assert isinstance(loaded, GatedSynergySeg)
    assert (loaded.tile_size, loaded.margin, loaded.threshold, loaded.max_tiles, loaded.pooling) == (
        16, 4, 0.2, 3, "low")
    assert loaded.fraction is None
    # `import synergyseg` alone registers the class: a fresh process loads the file.
    code = ("import keras, synergyseg; m = keras.models.load_model(%r, safe_mode=True); "
            "print(type(m).__name__, m.pooling)" % str(tmp_path / "gated.keras"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split()[-2:] == ["GatedSynergySeg", "low"]


@pytest.mark.parametrize("knobs", [dict(threshold=0.2), dict(fraction=0.5)])
def test_saved_model_export_matches_keras(model, tmp_path, knobs):
    gated = gated_synergyseg(model, tile_size=16, margin=4, **knobs)
    path = str(tmp_path / "saved_model")
    gated.export(path, format="tf_saved_model",
                 input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)])
    loaded = tf.saved_model.load(path)  # kept: its variables live as long as it does
    for x in (images(1, 40, 48), images(2, 35, 53, seed=4)):
        np.testing.assert_allclose(np.asarray(loaded.serve(x)), np.asarray(gated(x)), atol=1e-6)


@pytest.mark.parametrize("knobs", [
    dict(fraction=0.25),  # a fixed tile count at a fixed size: static shapes
    dict(threshold=0.0, max_tiles=3),  # a data-dependent tile batch inside an IF
    dict(threshold=0.99),  # no tile: the IF's other branch
])
def test_tflite_at_a_fixed_size_matches_keras(model, tmp_path, knobs):
    gated = gated_synergyseg(model, tile_size=32, margin=8, **knobs)
    module = tf.Module()
    module.variables_ = [v.value for v in gated.variables]
    module.serve = tf.function(lambda images: {"probabilities": gated(images, training=False)},
                               input_signature=[tf.TensorSpec((1, 80, 112, 3), tf.float32)])
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.serve})
    converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path), ["serving_default"])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    content = converter.convert()
    runner = make_interpreter(model_content=content).get_signature_runner("serving_default")
    x = images(1, 80, 112, seed=9)
    np.testing.assert_allclose(runner(images=x.numpy())["probabilities"], np.asarray(gated(x)), atol=1e-5)
    # What XNNPACK leaves to the interpreter: tile ranking, gathers and the paste, never a conv.
    left = undelegated_ops(content)
    print(f"{knobs}: ops XNNPACK does not take: {left}")
    assert not {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"} & set(left), left


def test_evaluate_scores_and_times_gated_settings(tmp_path):
    synthetic.generate(str(tmp_path / "data"), num_train=0, num_val=3, height=48, width=72, seed=1,
                       num_shards=1, workers=1, log=None)
    keras.utils.set_random_seed(5)
    two_scale = synergyseg.build_synergyseg(SYNTHETIC.num_classes, **tiny_kwargs())
    two_scale.save(tmp_path / "model.keras")
    pattern = str(tmp_path / "data" / "val-*.tfrecord")
    results = evaluate.main([str(tmp_path / "model.keras"), "--data", pattern, "--dataset", "synthetic",
                             "--gated", "0.5", "--gated-threshold", "0.05", "--no-ablation", "--figures", "0",
                             "--speed-size", "48x72", "--speed-warmup", "1", "--speed-iterations", "1",
                             "--no-progress", "--out", str(tmp_path / "eval")])
    assert set(results["gated"]) == {"gated 0.5", "gated >0.05"}
    assert [m["model"] for m in results["speed"]] == ["two-scale", "single-scale", "gated 0.5", "gated >0.05"]
    # The table's mIoU equals one computed from the gated model's own predictions.
    gated = gated_synergyseg(two_scale, fraction=0.5)
    labels, predictions = [], []
    for record in tf.data.TFRecordDataset(tf.io.gfile.glob(pattern)):
        image, label = decode_example(record)
        predictions.append(np.asarray(gated(tf.cast(image, tf.float32)[None]))[0].argmax(-1).ravel())
        labels.append(label.numpy().ravel().astype(np.int64))
    labels, predictions = np.concatenate(labels), np.concatenate(predictions)
    keep = labels != 255
    ious = [np.sum(keep & (labels == c) & (predictions == c)) / union
            for c in range(SYNTHETIC.num_classes)
            if (union := np.sum(keep & ((labels == c) | (predictions == c))))]
    assert results["gated"]["gated 0.5"]["mean_iou"] == pytest.approx(float(np.mean(ious)), abs=1e-6)
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert saved["gated"]["gated 0.5"]["mean_iou"] == pytest.approx(results["gated"]["gated 0.5"]["mean_iou"])
    assert (tmp_path / "eval" / "gated.csv").exists()
