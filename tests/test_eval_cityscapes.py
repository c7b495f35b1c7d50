"""Cityscapes result files pass the official evaluation, whose mIoU equals ours."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import evaluate
import synergyseg
from synergyseg.data import CITYSCAPES_ID_TO_TRAIN_ID, CITYSCAPES_TRAIN_ID_TO_ID, encode_example
from synergyseg.evaluation import ConfusionMatrix, result_path, train_ids_to_label_ids, write_result

FRAMES = [("frankfurt", "000000", "000294"), ("frankfurt", "000001", "000538"), ("lindau", "000002", "000019")]


def test_train_ids_map_back_to_official_label_ids():
    # Official ids of road, sky, bicycle (cityscapesscripts/helpers/labels.py).
    np.testing.assert_array_equal(train_ids_to_label_ids(np.array([[0, 10, 18]])), [[7, 23, 33]])
    np.testing.assert_array_equal(CITYSCAPES_ID_TO_TRAIN_ID[CITYSCAPES_TRAIN_ID_TO_ID], np.arange(19))
    with pytest.raises(ValueError, match="train ids"):
        train_ids_to_label_ids(np.array([[19]]))


def test_result_path_follows_the_benchmark_naming(tmp_path):
    assert result_path(str(tmp_path), "frankfurt_000000_000294_leftImg8bit.png") == str(
        tmp_path / "frankfurt" / "frankfurt_000000_000294_leftImg8bit.png")
    assert result_path("r", "leftImg8bit/val/bad-honnef/bad-honnef_000000_000001_leftImg8bit.png").endswith(
        "bad-honnef_000000_000001_leftImg8bit.png")
    with pytest.raises(ValueError, match="image0.png"):
        result_path("r", "image0.png")


def _fake_ground_truth(root, rng):
    """Label-id PNGs in the official gtFine layout; returns their paths and train-id labels."""
    gt_files, train_labels = [], []
    for city, seq, frame in FRAMES:
        # Label ids 0..33: the unscored ones (0-6, 9, 10, 14-16, 18, 29, 30) must be ignored alike.
        label_ids = rng.integers(0, 34, (24, 40)).astype(np.uint8)
        label_ids[:6] = 26  # a big car region so some classes get high IoU
        gt = root / "gtFine" / "val" / city / f"{city}_{seq}_{frame}_gtFine_labelIds.png"
        gt.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(label_ids).save(gt)
        # No instances (ids < 1000): the instance-level pass runs, and needs np.in1d, but adds nothing.
        Image.fromarray(label_ids.astype(np.uint16)).save(str(gt).replace("labelIds", "instanceIds"))
        gt_files.append(str(gt))
        train_labels.append(CITYSCAPES_ID_TO_TRAIN_ID[label_ids])
    return gt_files, train_labels


def _official_scores(gt_files, results_dir, monkeypatch):
    # cityscapesscripts 2.3.0 calls np.in1d, which numpy 2.4 removed; np.isin is its replacement.
    if not hasattr(np, "in1d"):
        monkeypatch.setattr(np, "in1d", np.isin, raising=False)
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official

    args = official.args
    monkeypatch.setattr(args, "predictionPath", str(results_dir))
    monkeypatch.setattr(args, "predictionWalk", None)
    monkeypatch.setattr(args, "quiet", True)
    monkeypatch.setattr(args, "JSONOutput", False)
    # getPrediction is the official file matching: it fails if a result file is missing or doubled.
    predictions = [official.getPrediction(args, gt) for gt in gt_files]
    return official.evaluateImgLists(predictions, gt_files, args)


NAMES = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
         "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
         "motorcycle", "bicycle"]


def test_official_evaluation_mean_iou_equals_ours(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    gt_files, train_labels = _fake_ground_truth(tmp_path, rng)
    ours = ConfusionMatrix(19)
    for (city, seq, frame), train_ids in zip(FRAMES, train_labels):
        # A prediction right on 60 % of pixels, random train ids elsewhere.
        prediction = np.where((rng.random(train_ids.shape) < 0.6) & (train_ids != 255), train_ids,
                              rng.integers(0, 19, train_ids.shape)).astype(np.uint8)
        write_result(str(tmp_path / "results"), f"{city}_{seq}_{frame}_leftImg8bit.png", prediction)
        ours.update(train_ids[None], prediction[None])
    result = _official_scores(gt_files, tmp_path / "results", monkeypatch)
    scores = ours.scores()
    assert result["averageScoreClasses"] == pytest.approx(scores.mean_iou, abs=1e-12)
    for name, iou in zip(NAMES, scores.iou):
        assert result["classScores"][name] == pytest.approx(iou, abs=1e-12), name


def test_evaluate_py_result_files_score_the_same_officially(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    gt_files, train_labels = _fake_ground_truth(tmp_path, rng)
    records = tmp_path / "val-00000-of-00001.tfrecord"
    with tf.io.TFRecordWriter(str(records)) as writer:
        for (city, seq, frame), train_ids in zip(FRAMES, train_labels):
            image = rng.integers(0, 256, (*train_ids.shape, 3), dtype=np.uint8)
            writer.write(encode_example(
                tf.io.encode_png(image).numpy(), tf.io.encode_png(train_ids[..., None]).numpy(),
                filename=f"{city}_{seq}_{frame}_leftImg8bit.png", height=24, width=40))
    model = synergyseg.build_synergyseg(19, backbone="resnet18", backbone_width=8, head_filters=16,
                                        low_level_filters=8)
    model.save(tmp_path / "model.keras")
    results = evaluate.main([str(tmp_path / "model.keras"), "--data", str(records), "--dataset",
                             "cityscapes", "--cityscapes-results", str(tmp_path / "results"),
                             "--no-speed", "--no-ablation", "--figures", "0", "--no-progress"])
    assert results["cityscapes_results"]["files"] == 3 and results["label_values"] == 34
    official = _official_scores(gt_files, tmp_path / "results", monkeypatch)
    assert official["averageScoreClasses"] == pytest.approx(results["accuracy"]["mean_iou"], abs=1e-12)
