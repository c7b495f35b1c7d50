import numpy as np
import pytest

import keras
from synergyseg.models import fusion
from tests.reference import bilinear_resize, random_softmax

H, W, C = 9, 13, 5  # odd full size; the low scale is ceil(H/2) x ceil(W/2)


@pytest.fixture
def scales():
    rng = np.random.default_rng(0)
    s_lo = random_softmax(rng, (2, (H + 1) // 2, (W + 1) // 2, C))
    s_hi = random_softmax(rng, (2, H, W, C))
    return s_lo, s_hi


def up(s_lo):
    return bilinear_resize(s_lo.astype("float64"), H, W)


def test_eq1_elementwise_matches_numpy(scales):
    s_lo, s_hi = scales
    expected = up(s_lo) + s_hi * bilinear_resize(1.0 - s_lo.astype("float64"), H, W)
    got = fusion.UncertaintyFusion(normalize=False)([s_lo, s_hi])
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-6)


def test_eq1_confidence_mode_matches_numpy(scales):
    s_lo, s_hi = scales
    mask = bilinear_resize(1.0 - s_lo.astype("float64").max(-1, keepdims=True), H, W)
    expected = up(s_lo) + s_hi * mask
    got = fusion.UncertaintyFusion(mode="confidence", normalize=False)([s_lo, s_hi])
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-6)


@pytest.mark.parametrize("mode", ["elementwise", "confidence"])
def test_normalized_fusion_is_a_distribution_with_eq1_argmax(scales, mode):
    s_lo, s_hi = scales
    raw = np.asarray(fusion.UncertaintyFusion(mode=mode, normalize=False)([s_lo, s_hi]))
    norm = np.asarray(fusion.UncertaintyFusion(mode=mode)([s_lo, s_hi]))
    np.testing.assert_allclose(norm, raw / raw.sum(-1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(norm.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(norm.argmax(-1), raw.argmax(-1))
    # As written, eq. 1 is not a distribution: it sums to more than one wherever S_hi adds mass.
    assert raw.sum(-1).min() > 1.0


def test_baselines_match_numpy(scales):
    s_lo, s_hi = scales
    mx = np.maximum(up(s_lo), s_hi)
    cases = {
        fusion.LowScaleOnly(): up(s_lo),
        fusion.HighScaleOnly(): s_hi,
        fusion.AverageFusion(): 0.5 * (up(s_lo) + s_hi),
        fusion.MaxFusion(normalize=False): mx,
        fusion.MaxFusion(): mx / mx.sum(-1, keepdims=True),
    }
    for layer, expected in cases.items():
        np.testing.assert_allclose(np.asarray(layer([s_lo, s_hi])), expected, atol=1e-6, err_msg=layer.name)


def test_attention_fusion_matches_its_formula(scales):
    s_lo, s_hi = scales
    layer = fusion.AttentionFusion(filters=4)
    got = np.asarray(layer([s_lo, s_hi]))
    a = np.asarray(layer.attention(s_lo)).astype("float64")
    assert a.shape == s_lo.shape[:3] + (1,) and (a > 0).all() and (a < 1).all()
    expected = bilinear_resize(a * s_lo, H, W) + (1 - bilinear_resize(a, H, W)) * s_hi
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert len(layer.trainable_weights) == 5  # conv kernel, BN gamma/beta, score kernel/bias


def test_uncertainty_mask_matches_numpy(scales):
    s_lo, s_hi = scales
    got = np.asarray(fusion.UncertaintyMask()([s_lo, s_hi]))
    expected = bilinear_resize(1.0 - s_lo.astype("float64").max(-1, keepdims=True), H, W)
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("mode", ["elementwise", "confidence"])
def test_confident_low_scale_keeps_its_class_split_low_scale_defers_to_high(mode):
    # Same size at both scales, so U is the identity and each pixel is checked on its own.
    s_lo = np.array([[[[0.90, 0.05, 0.05], [0.45, 0.45, 0.10]]]], "float32")
    s_hi = np.array([[[[0.20, 0.70, 0.10], [0.10, 0.10, 0.80]]]], "float32")
    fused = np.asarray(fusion.UncertaintyFusion(mode=mode)([s_lo, s_hi]))
    assert fused[0, 0, 0].argmax() == 0  # low scale confident (0.9): its class stays
    assert fused[0, 0, 1].argmax() == 2  # low scale split 0.45/0.45: the high scale's class wins


@pytest.mark.parametrize("mode", ["elementwise", "confidence"])
def test_eq1_decides_pixels_where_average_and_max_disagree_with_it(mode):
    """Pixel 0: a fairly sure low scale (0.7) against a split high scale: eq. 1 keeps the low
    scale's class where averaging follows the high scale. Pixel 1: a split low scale: eq. 1
    adds the high scale's 0.4 to the low scale's 0.5 where max takes the high scale's 0.6."""
    s_lo = np.array([[[[0.7, 0.3, 0.0], [0.5, 0.5, 0.0]]]], "float32")
    s_hi = np.array([[[[0.0, 0.5, 0.5], [0.0, 0.4, 0.6]]]], "float32")
    eq1 = np.asarray(fusion.UncertaintyFusion(mode=mode)([s_lo, s_hi]))[0, 0].argmax(-1)
    average = np.asarray(fusion.AverageFusion()([s_lo, s_hi]))[0, 0].argmax(-1)
    maximum = np.asarray(fusion.MaxFusion()([s_lo, s_hi]))[0, 0].argmax(-1)
    np.testing.assert_array_equal(eq1, [0, 1])
    np.testing.assert_array_equal(average, [1, 1])
    np.testing.assert_array_equal(maximum, [0, 2])


@pytest.mark.parametrize("name", sorted(fusion.FUSIONS))
def test_every_fusion_round_trips_its_config(scales, name):
    s_lo, s_hi = scales
    layer = fusion.make_fusion(name)
    out = np.asarray(layer([s_lo, s_hi]))
    clone = type(layer).from_config(layer.get_config())
    clone.build([s_lo.shape, s_hi.shape])
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(np.asarray(clone([s_lo, s_hi])), out)
    assert keras.saving.get_registered_name(type(layer)).startswith("synergyseg>")


def test_fusion_rejects_bad_inputs(scales):
    s_lo, s_hi = scales
    with pytest.raises(ValueError, match="same C"):
        fusion.UncertaintyFusion()([s_lo[..., :3], s_hi])
    with pytest.raises(ValueError, match="mode"):
        fusion.UncertaintyFusion(mode="softmax")
    with pytest.raises(ValueError, match="Unknown fusion 'mean'.*average"):
        fusion.make_fusion("mean")
