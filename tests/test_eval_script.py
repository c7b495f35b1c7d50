"""evaluate.py end to end on a tiny saved model and a few synthetic validation records."""

import csv
import json
import os

import numpy as np
import pytest
import tensorflow as tf

import evaluate
import synergyseg
from synergyseg.training.config import RunConfig
import synergyseg.run_folder
from synergyseg.data import SYNTHETIC, decode_example, synthetic
from synergyseg.evaluation import ABLATION_FUSIONS, figures


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    synthetic.generate(str(root / "data"), num_train=0, num_val=4, height=40, width=56, seed=3,
                       num_shards=1, workers=1, log=None)
    run = root / "run"
    run.mkdir()
    model = synergyseg.build_synergyseg(SYNTHETIC.num_classes, backbone="resnet18", backbone_width=8,
                                        head_filters=16, low_level_filters=8)
    model.save(run / "best.keras")
    # What train.py writes: the run's RunConfig (its val_files name the validation shards).
    RunConfig(data_dir=str(root / "data"), num_classes=SYNTHETIC.num_classes).to_json(run / "config.json")
    return run


def _numpy_mean_iou(model, pattern, num_classes):
    """mIoU of model.predict over the records, from pixel sets (no confusion matrix)."""
    labels, predictions = [], []
    for record in tf.data.TFRecordDataset(tf.io.gfile.glob(pattern)):
        image, label = decode_example(record)
        probabilities = model.predict(tf.cast(image, tf.float32)[None], verbose=0)[0]
        labels.append(label.numpy().ravel().astype(np.int64))
        predictions.append(probabilities.argmax(-1).ravel())
    labels, predictions = np.concatenate(labels), np.concatenate(predictions)
    keep = labels != 255
    ious = []
    for c in range(num_classes):
        union = np.sum(keep & ((labels == c) | (predictions == c)))
        if union:
            ious.append(np.sum(keep & (labels == c) & (predictions == c)) / union)
    return float(np.mean(ious))


def test_run_folder_writes_every_table_and_figure(run_dir, capsys):
    results = evaluate.main([str(run_dir), "--speed-size", "40x56", "--speed-warmup", "1",
                             "--speed-iterations", "2", "--figures", "2", "--no-progress"])
    out = run_dir / "evaluation"
    saved = json.loads((out / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert saved["dataset"] == "synthetic" and saved["scored_classes"] == 10 and saved["images"] == 4

    # Table I equals an independent computation from model.predict on the same records.
    model = synergyseg.run_folder.load_model(str(run_dir / "best.keras"))
    expected = _numpy_mean_iou(model, str(run_dir.parent / "data" / "val-*.tfrecord"), 10)
    assert saved["accuracy"]["mean_iou"] == pytest.approx(expected, abs=1e-9)
    with open(out / "accuracy.csv") as f:
        rows = {r["class"]: r for r in csv.DictReader(f)}
    assert float(rows["mean_iou"]["model"]) == pytest.approx(expected, abs=1e-6)
    assert set(rows) >= set(SYNTHETIC.class_names)

    # The ablation: five fusions from the same weights; eq. 1 is the model's own fusion.
    assert list(saved["ablation"]) == list(ABLATION_FUSIONS)
    assert saved["ablation"]["uncertainty"] == saved["accuracy"]
    with open(out / "ablation.csv") as f:
        assert next(csv.reader(f)) == ["class_id", "class", *ABLATION_FUSIONS]

    # Speed: both models, on the named device, with the asked number of timed calls.
    assert [m["model"] for m in saved["speed"]] == ["two-scale", "single-scale"]
    for m in saved["speed"]:
        assert len(m["latency_ms"]) == 2 and min(m["latency_ms"]) > 0 and m["device"]
        # FPS, median and p90 are the timed calls' own: images per second of the median call.
        latency = np.asarray(m["latency_ms"])
        assert m["latency_ms_median"] == pytest.approx(np.median(latency), rel=1e-9)
        assert m["latency_ms_p90"] == pytest.approx(np.percentile(latency, 90), rel=1e-9)
        assert m["fps"] == pytest.approx(m["batch_size"] * 1000 / np.median(latency), rel=1e-9)

    grid = figures.grid_size_px(2, 40, 56, 10)
    for name, size in (("qualitative", grid), ("per_class_iou", figures.IOU_CHART_PX),
                       ("confusion_matrix", figures.CONFUSION_PX)):
        with tf.io.gfile.GFile(str(out / "figures" / f"{name}.png"), "rb") as f:
            assert tf.io.decode_png(f.read()).shape[:2] == (size[1], size[0])
    report = (out / "report.md").read_text()
    assert "## Fusion ablation" in report and "## Speed" in report
    assert "10 scored classes of 10 label values" in capsys.readouterr().out


def test_options_flip_resize_limit(run_dir, tmp_path):
    results = evaluate.main([str(run_dir / "best.keras"), "--out", str(tmp_path), "--flip",
                             "--resize-factor", "0.5", "--limit", "3", "--no-speed", "--figures", "0",
                             "--fusions", "low,uncertainty", "--no-progress"])
    assert results["images"] == 3 and results["flip"] and results["resize_factor"] == 0.5
    assert list(results["ablation"]) == ["low", "uncertainty"]
    assert "speed" not in results and not (tmp_path / "figures").exists()
    assert sorted(os.listdir(tmp_path)) == ["ablation.csv", "accuracy.csv", "confusion_matrix.csv",
                                            "report.md", "results.json"]


def test_bad_inputs_name_the_problem(run_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        evaluate.main([str(tmp_path / "nowhere"), "--no-speed"])
    with pytest.raises(FileNotFoundError, match="matches no TFRecord"):
        evaluate.main([str(run_dir), "--data", str(tmp_path / "*.tfrecord"), "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="predicts 10 classes"):
        evaluate.main([str(run_dir), "--dataset", "cityscapes", "--out", str(tmp_path)])


def test_speed_only_needs_no_data(run_dir, tmp_path):
    results = evaluate.main([str(run_dir / "best.keras"), "--speed-only", "--out", str(tmp_path),
                             "--speed-size", "24x40", "--speed-batch-size", "2", "--speed-warmup", "1",
                             "--speed-iterations", "2", "--data", str(tmp_path / "none-*.tfrecord")])
    assert [(m["model"], m["height"], m["width"], m["batch_size"]) for m in results["speed"]] == [
        ("two-scale", 24, 40, 2), ("single-scale", 24, 40, 2)]
    assert sorted(os.listdir(tmp_path)) == ["report.md", "results.json", "speed.csv"]


def test_batch_size_2_scores_what_model_predict_scores_image_by_image(run_dir, tmp_path):
    results = evaluate.main([str(run_dir / "best.keras"), "--out", str(tmp_path), "--batch-size", "2",
                             "--no-speed", "--no-ablation", "--figures", "0", "--no-progress"])
    assert results["images"] == 4
    model = synergyseg.run_folder.load_model(str(run_dir / "best.keras"))
    expected = _numpy_mean_iou(model, str(run_dir.parent / "data" / "val-*.tfrecord"), 10)
    assert results["accuracy"]["mean_iou"] == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("flags, jit, precision", [(["--jit"], True, "float32"),
                                                   (["--precision", "mixed_float16"], False, "mixed_float16")])
def test_speed_with_xla_or_mixed_precision(run_dir, tmp_path, flags, jit, precision):
    results = evaluate.main([str(run_dir / "best.keras"), "--speed-only", "--out", str(tmp_path),
                             "--speed-size", "32x48", "--speed-batch-size", "1", "--speed-warmup", "1",
                             "--speed-iterations", "3", *flags])
    assert [m["model"] for m in results["speed"]] == ["two-scale", "single-scale"]
    for m in results["speed"]:
        assert (m["jit_compile"], m["precision"]) == (jit, precision)
        assert m["fps"] == pytest.approx(1000 / np.median(m["latency_ms"]), rel=1e-9)
    with open(tmp_path / "speed.csv") as f:
        assert [r["precision"] for r in csv.DictReader(f)] == [precision] * 2


def test_mapillary_v12_layout_scores_65_of_66_labels_end_to_end(tmp_path, capsys):
    from PIL import Image

    from synergyseg.data import mapillary

    # Vistas v1.2's shape: 66 labels, the last "Unlabeled" with evaluate: false (-> 255).
    labels = [{"name": f"class--{i}", "readable": f"Class {i}", "color": [i, (2 * i) % 256, (3 * i) % 256],
               "instances": False, "evaluate": True} for i in range(65)]
    labels.append({"name": "void--unlabeled", "readable": "Unlabeled", "color": [0, 0, 0],
                   "instances": False, "evaluate": False})
    root = tmp_path / "vistas"
    (root / "validation" / "images").mkdir(parents=True)
    (root / "validation" / "labels").mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"labels": labels}))
    rng = np.random.default_rng(5)
    palette = [c for label in labels for c in label["color"]]
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(
            root / "validation" / "images" / f"img{i}.jpg")
        ids = Image.fromarray(rng.integers(0, 66, (32, 48), dtype=np.uint8), mode="P")
        ids.putpalette(palette + [0] * (768 - len(palette)))
        ids.save(root / "validation" / "labels" / f"img{i}.png")
    mapillary.convert(str(root), str(tmp_path / "data"), splits=("validation",), num_shards=1,
                      workers=1, log=None)
    model_path = tmp_path / "mapillary.keras"
    synergyseg.build_synergyseg(65, backbone="resnet18", backbone_width=8, head_filters=16,
                                low_level_filters=8).save(model_path)
    pattern = str(tmp_path / "data" / "val-*.tfrecord")
    results = evaluate.main([str(model_path), "--data", pattern, "--dataset", "mapillary",
                             "--mapillary-config", str(root / "config.json"), "--out", str(tmp_path / "ev"),
                             "--no-speed", "--no-ablation", "--figures", "0", "--no-progress"])
    assert (results["scored_classes"], results["label_values"], results["images"]) == (65, 66, 2)
    assert "65 scored classes of 66 label values" in (tmp_path / "ev" / "report.md").read_text()
    model = synergyseg.run_folder.load_model(str(model_path))
    assert results["accuracy"]["mean_iou"] == pytest.approx(_numpy_mean_iou(model, pattern, 65), abs=1e-9)
    with open(tmp_path / "ev" / "accuracy.csv") as f:
        names = {r["class"] for r in csv.DictReader(f)}
    assert "Class 64" in names and "Unlabeled" not in names
