"""The recipe's pieces: polynomial schedule, decoupled weight decay, loss and metric ignore 255."""

import keras
import numpy as np
import pytest

from synergyseg.training.recipe import mean_iou, output_loss, segmentation_loss
from synergyseg.training.schedules import WarmupPolynomialDecay


def test_learning_rate_follows_the_polynomial_schedule():
    lr = WarmupPolynomialDecay(0.01, decay_steps=1000, power=0.9)
    for step in (0, 1, 250, 500, 999, 1000, 1200):
        expected = 0.01 * (1 - min(step, 1000) / 1000) ** 0.9
        assert float(lr(step)) == pytest.approx(expected, rel=1e-5, abs=1e-9)


def test_warm_up_rises_linearly_then_joins_the_decay():
    lr = WarmupPolynomialDecay(0.01, decay_steps=100, warmup_steps=10, warmup_start=0.1)
    at_10 = 0.01 * (1 - 10 / 100) ** 0.9
    assert float(lr(0)) == pytest.approx(0.1 * at_10, rel=1e-5)
    assert float(lr(5)) == pytest.approx((0.1 + 0.9 * 0.5) * at_10, rel=1e-5)
    assert float(lr(10)) == pytest.approx(at_10, rel=1e-5)
    assert float(lr(50)) == pytest.approx(0.01 * 0.5 ** 0.9, rel=1e-5)
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(lr))
    assert float(restored(5)) == pytest.approx(float(lr(5)))


def test_optimizer_learning_rate_follows_the_schedule_while_training():
    from synergyseg.training.config import preset
    from synergyseg.training.run import make_optimizer
    opt = make_optimizer(preset("synthetic", learning_rate=0.1), total_steps=20)
    w = keras.Variable(np.ones(3, np.float32))
    opt.build([w])
    seen = []
    for _ in range(12):
        seen.append(float(keras.ops.convert_to_numpy(opt.learning_rate)))
        opt.apply_gradients([(np.zeros(3, np.float32), w)])
    np.testing.assert_allclose(seen, [0.1 * (1 - s / 20) ** 0.9 for s in range(12)], rtol=1e-5)


def test_make_optimizer_decays_weights_before_the_momentum_step():
    """Our optimizer against a numpy SGD: each step w <- w - lr_t * wd * w, then the momentum
    update m <- 0.9 m - lr_t * g, w <- w + m, with lr_t the polynomial decay (L2 in the gradient
    or decay after the step would give other weights)."""
    from synergyseg.training import recipe
    lr0, wd, steps, total = 0.1, 0.05, 4, 10
    opt = recipe.make_optimizer(total, learning_rate=lr0, weight_decay=wd)
    w = keras.Variable(np.array([3.0, -2.0], np.float32))
    grads = np.array([[0.5, 1.0], [-0.2, 0.3], [0.1, -0.4], [0.7, 0.0]], np.float32)
    for g in grads:
        opt.apply_gradients([(g, w)])
    ref_w, m = np.array([3.0, -2.0]), np.zeros(2)
    for step, g in enumerate(grads):
        lr = lr0 * (1 - step / total) ** recipe.POLY_POWER
        ref_w = ref_w - lr * wd * ref_w
        m = recipe.MOMENTUM * m - lr * g
        ref_w = ref_w + m
    np.testing.assert_allclose(w.numpy(), ref_w, rtol=1e-5)
    assert steps == len(grads) and opt.momentum == recipe.MOMENTUM


def _probabilities(rng, shape):
    logits = rng.normal(size=shape).astype(np.float32)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_pixels_labelled_255_change_neither_loss_nor_metric():
    rng = np.random.default_rng(0)
    probs = _probabilities(rng, (2, 6, 7, 4))
    label = rng.integers(0, 4, (2, 6, 7)).astype(np.int32)
    ignore = rng.random((2, 6, 7)) < 0.3
    label[ignore] = 255
    # Reference: mean cross-entropy over labelled pixels only.
    keep = ~ignore
    p_true = np.take_along_axis(probs, np.where(keep, label, 0)[..., None], -1)[..., 0]
    expected = -np.log(p_true[keep]).mean()
    loss = float(segmentation_loss()(label, probs))
    assert loss == pytest.approx(expected, rel=1e-5)
    # Changing the predictions under ignored pixels changes nothing.
    other = probs.copy()
    other[ignore] = _probabilities(rng, (int(ignore.sum()), 4))
    assert float(segmentation_loss()(label, other)) == pytest.approx(loss, rel=1e-6)
    m1, m2 = mean_iou(4), mean_iou(4)
    m1.update_state(label, probs)
    m2.update_state(label, other)
    assert float(m1.result()) == pytest.approx(float(m2.result()), abs=1e-7)
    # And the metric equals a numpy confusion-matrix mIoU over labelled pixels.
    pred = probs.argmax(-1)[keep]
    cm = np.zeros((4, 4))
    np.add.at(cm, (label[keep], pred), 1)
    inter = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - inter
    assert float(m1.result()) == pytest.approx((inter[union > 0] / union[union > 0]).mean(), rel=1e-5)


def test_custom_loop_loss_is_the_fused_cross_entropy_plus_the_weighted_scales():
    # numpy cross-entropy over labelled pixels: the multi-worker step's loss, as Keras's compiled
    # loss weighs it (fused 1, s_lo and s_hi aux_loss_weight); no dict, or weight 0: fused alone.
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (2, 4, 4)).astype("int32")
    labels[0, 0] = 255
    maps = {}
    for name in ("fused", "s_lo", "s_hi", "uncertainty"):
        raw = rng.random((2, 4, 4, 3)).astype("float32") + 0.1
        maps[name] = raw / raw.sum(-1, keepdims=True)
    keep = labels != 255

    def cross_entropy(p):
        picked = np.take_along_axis(p, np.where(keep, labels, 0)[..., None], -1)[..., 0]
        return -np.log(picked[keep]).mean()

    expected = cross_entropy(maps["fused"]) + 0.4 * (cross_entropy(maps["s_lo"]) + cross_entropy(maps["s_hi"]))
    assert float(output_loss(0.4)(labels, maps)) == pytest.approx(expected, rel=1e-5)
    assert float(output_loss(0.0)(labels, maps)) == pytest.approx(cross_entropy(maps["fused"]), rel=1e-5)
    assert float(output_loss(0.4)(labels, maps["fused"])) == pytest.approx(cross_entropy(maps["fused"]), rel=1e-5)
