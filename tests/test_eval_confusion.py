"""The streaming confusion matrix and its IoU scores against independent numpy computations."""

import json
import math

import keras
import numpy as np
import pytest

from synergyseg.evaluation import ConfusionMatrix, report, scores_from_confusion

C = 6


def _random_batches(seed, batches=3, shape=(2, 17, 23)):
    rng = np.random.default_rng(seed)
    for _ in range(batches):
        labels = rng.integers(0, C, shape)
        labels[rng.random(shape) < 0.2] = 255
        predictions = rng.integers(0, C, shape)
        yield labels.astype(np.int32), predictions.astype(np.uint8)


def _numpy_iou(batches):
    """Per-class IoU from pixel sets, without a confusion matrix."""
    labels = np.concatenate([l.ravel() for l, _ in batches])
    predictions = np.concatenate([p.ravel() for _, p in batches]).astype(np.int32)
    scored = labels != 255
    iou = np.full(C, np.nan)
    for c in range(C):
        tp = np.sum(scored & (labels == c) & (predictions == c))
        fp = np.sum(scored & (labels != c) & (predictions == c))
        fn = np.sum(scored & (labels == c) & (predictions != c))
        if tp + fp + fn:
            iou[c] = tp / (tp + fp + fn)
    accuracy = np.sum(scored & (labels == predictions)) / np.sum(scored)
    return iou, accuracy, int(scored.sum())


def test_iou_equals_numpy_on_random_data_with_ignore():
    batches = list(_random_batches(0))
    cm = ConfusionMatrix(C)
    for labels, predictions in batches:
        cm.update(labels, predictions)
    scores = cm.scores()
    iou, accuracy, pixels = _numpy_iou(batches)
    np.testing.assert_allclose(scores.iou, iou, rtol=1e-12)
    assert scores.mean_iou == pytest.approx(np.nanmean(iou), rel=1e-12)
    assert scores.pixel_accuracy == pytest.approx(accuracy, rel=1e-12)
    assert scores.pixels == pixels and cm.images == 6
    # The matrix itself: rows = labels, columns = predictions, ignore skipped.
    expected = np.zeros((C, C), np.int64)
    for labels, predictions in batches:
        keep = labels != 255
        np.add.at(expected, (labels[keep], predictions[keep].astype(np.int64)), 1)
    np.testing.assert_array_equal(cm.matrix, expected)
    assert cm.matrix.dtype == np.int64


def test_mean_iou_matches_keras_mean_iou():
    batches = list(_random_batches(1))
    cm = ConfusionMatrix(C)
    metric = keras.metrics.MeanIoU(num_classes=C, ignore_class=255, sparse_y_pred=True)
    for labels, predictions in batches:
        cm.update(labels, predictions)
        metric.update_state(labels, predictions.astype(np.int32))
    assert cm.scores().mean_iou == pytest.approx(float(metric.result()), abs=1e-6)


def test_absent_class_is_reported_absent_not_zero_and_left_out_of_the_mean():
    labels = np.array([[[0, 0, 1, 255], [1, 1, 3, 3]]])
    predictions = np.array([[[0, 1, 1, 2], [1, 1, 3, 0]]])
    cm = ConfusionMatrix(5)
    cm.update(labels, predictions)
    scores = cm.scores()
    # Class 2 is predicted only on an ignored pixel and class 4 never appears: both absent.
    assert np.isnan(scores.iou[2]) and np.isnan(scores.iou[4])
    np.testing.assert_allclose(scores.iou[[0, 1, 3]], [1 / 3, 3 / 4, 1 / 2])
    assert scores.mean_iou == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
    names = ["a", "b", "c", "d", "e"]
    record = report.scores_record(scores, names)
    assert record["per_class_iou"]["c"] is None and record["absent_classes"] == ["c", "e"]
    assert json.loads(json.dumps(record, allow_nan=False))["per_class_iou"]["a"] == pytest.approx(1 / 3)
    markdown = report.iou_markdown({"IoU": scores}, names)
    assert "| c | —" in markdown and "| a | 33.3" in markdown
    csv_rows = report.iou_csv({"IoU": scores}, names).splitlines()
    assert csv_rows[3] == "2,c," and csv_rows[1] == "0,a,0.333333"


def test_nothing_scored_gives_nan_scores():
    scores = scores_from_confusion(np.zeros((3, 3), np.int64))
    assert np.isnan(scores.iou).all() and math.isnan(scores.mean_iou) and scores.pixels == 0


def test_label_outside_the_classes_is_an_error_naming_it():
    cm = ConfusionMatrix(4)
    with pytest.raises(ValueError, match="label value 7"):
        cm.update(np.array([[1, 7]]), np.array([[1, 2]]))
    with pytest.raises(ValueError, match="differ in shape"):
        cm.update(np.zeros((1, 4, 4)), np.zeros((1, 2, 2)))
