"""The one-pass fusion ablation predicts exactly what `with_fusion(model, name)` predicts."""

import numpy as np
import pytest
import tensorflow as tf

import synergyseg
from synergyseg.evaluation import (
    ABLATION_FUSIONS, MODEL_KEY, Predictor, evaluate_batches)
from synergyseg.models.fusion import WEIGHTLESS_FUSIONS
from synergyseg.models.resize import Downsample
from tests.reference import bilinear_resize

C = 5


@pytest.fixture(scope="module")
def model():
    return synergyseg.build_synergyseg(C, backbone="resnet18", backbone_width=8, head_filters=16,
                                       low_level_filters=8)


@pytest.fixture(scope="module")
def images():
    # Odd sizes: the low scale is ceil(h / 2) and its upsampling must still line up.
    return np.random.default_rng(0).uniform(0, 255, (2, 33, 47, 3)).astype(np.float32)


def test_every_weightless_fusion_equals_with_fusion(model, images):
    predictor = Predictor(model, fusions=WEIGHTLESS_FUSIONS)
    out = predictor(images, (33, 47))
    np.testing.assert_array_equal(out[MODEL_KEY], model(images).numpy().argmax(-1))
    for name in WEIGHTLESS_FUSIONS:
        expected = synergyseg.with_fusion(model, name)(images).numpy().argmax(-1)
        np.testing.assert_array_equal(out[name], expected, err_msg=name)
    # The mask is eq. 1's U(1 - max_c S_lo), computed here apart from the two-scale graph: the
    # submodel on the half-size image, its confidence map upsampled by a numpy bilinear resize.
    s_lo = synergyseg.submodel_of(model)(Downsample(2)(images)).numpy().astype("float64")
    mask = bilinear_resize(1 - s_lo.max(-1, keepdims=True), 33, 47)[..., 0]
    assert 0 <= mask.min() and mask.max() <= 1 and mask.std() > 1e-3  # a mask with structure
    np.testing.assert_allclose(out["uncertainty_mask"], mask, atol=2e-5)


def test_flip_averages_the_fused_probabilities_of_both_passes(model, images):
    out = Predictor(model, fusions=("max",), flip=True)(images, (33, 47))
    fused = synergyseg.with_fusion(model, "max")
    probabilities = fused(images).numpy() + fused(images[:, :, ::-1]).numpy()[:, :, ::-1]
    agree = out["max"] == probabilities.argmax(-1)
    # Different summation order can flip an exact tie; anything beyond a stray pixel is a bug.
    assert agree.mean() > 0.999


def test_resized_input_is_scored_at_the_label_size(model, images):
    out = Predictor(model)(images[:, :16, :24], (33, 47))
    probabilities = tf.image.resize(model(images[:, :16, :24]), (33, 47), "bilinear")
    assert out[MODEL_KEY].shape == (2, 33, 47)
    assert (out[MODEL_KEY] == probabilities.numpy().argmax(-1)).mean() > 0.999


def test_ablation_scores_five_fusions_in_one_pass_without_changing_weights(model, images):
    weights = [w.copy() for w in model.get_weights()]
    labels = np.random.default_rng(1).integers(0, C, (2, 33, 47)).astype(np.int32)
    labels[:, :3] = 255
    batches = [(images[:1], labels[:1]), (images[1:], labels[1:])]
    matrices = evaluate_batches(Predictor(model, fusions=ABLATION_FUSIONS), batches, C, progress=False)
    assert set(matrices) == {MODEL_KEY, *ABLATION_FUSIONS}
    for name in ABLATION_FUSIONS:
        predictions = synergyseg.with_fusion(model, name)(images).numpy().argmax(-1)
        keep = labels != 255
        expected = np.bincount(labels[keep] * C + predictions[keep], minlength=C * C).reshape(C, C)
        np.testing.assert_array_equal(matrices[name].matrix, expected, err_msg=name)
    np.testing.assert_array_equal(matrices[MODEL_KEY].matrix, matrices["uncertainty"].matrix)
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_single_scale_model_has_no_ablation(model):
    single = synergyseg.submodel_of(model)
    with pytest.raises(ValueError, match="single-scale"):
        Predictor(single, fusions=("low",))
    with pytest.raises(ValueError, match="attention"):
        Predictor(model, fusions=("attention",))
    out = Predictor(single)(np.zeros((1, 16, 16, 3), np.float32), (16, 16))
    assert set(out) == {MODEL_KEY} and out[MODEL_KEY].shape == (1, 16, 16)
