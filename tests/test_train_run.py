"""End-to-end runs of `synergyseg.training.run.train` on a tiny synthetic set: learning, resume, run folder."""

import csv
import glob
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from synergyseg import data
from synergyseg.training.config import RunConfig, preset
from synergyseg.training.run import train

TINY = dict(backbone="resnet18", backbone_width=8, head_filters=16, low_level_filters=8,
            crop_size=(64, 128), batch_size=4, steps_per_epoch=4, tensorboard_images=1)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    data.synthetic.generate(str(out), num_train=16, num_val=4, height=64, width=128, seed=0,
                            num_shards=2, workers=1, log=None)
    return str(out)


def _epochs(history_csv):
    with open(history_csv) as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def test_short_run_lowers_loss_and_beats_a_constant_prediction(data_dir, tmp_path):
    config = preset("synthetic", data_dir=data_dir, run_dir=str(tmp_path / "run"), epochs=16,
                    learning_rate=0.05, scale_range=None, **TINY)
    result = train(config, log=lambda *a: None)
    history = result["history"]
    assert history["loss"][-1] < 0.8 * history["loss"][0]
    metrics = result["metrics"]
    assert metrics["mean_iou"] > 1.5 * metrics["constant_prediction_mean_iou"]
    # The run folder of the contract, and a config that repeats the run.
    run = tmp_path / "run"
    for name in ("config.json", "best.keras", "final.keras", "history.csv", "metrics.json",
                 "training_curves.png"):
        assert (run / name).is_file(), name
    assert not (run / "backup").exists() and not list(run.glob("*partial*"))
    assert RunConfig.from_json(run / "config.json") == config
    assert json.loads((run / "metrics.json").read_text())["mean_iou"] == metrics["mean_iou"]
    # Per-class IoU under each class's name; its mean is Keras's val_mean_iou.
    with open(run / "history.csv") as f:
        last = list(csv.DictReader(f))[-1]
    per_class = [float(last[k]) for k in last if k.startswith("val_iou_")]
    assert len(per_class) == 10 and "val_iou_traffic_sign" in last
    assert np.nanmean(per_class) == pytest.approx(float(last["val_mean_iou"]), abs=1e-6)
    # final.keras reproduces metrics.json, which the last epoch's validation gave without a
    # second pass: score final.keras independently (numpy IoU over model.predict).
    model = keras.models.load_model(run / "final.keras", safe_mode=True)
    assert model.output_shape == (None, None, None, 10)
    labels, predictions = [], []
    for record in tf.data.TFRecordDataset(sorted(glob.glob(f"{data_dir}/val-*.tfrecord"))):
        image, label = data.decode_example(record)
        predictions.append(model.predict(tf.cast(image, tf.float32)[None], verbose=0)[0].argmax(-1).ravel())
        labels.append(label.numpy().ravel())
    labels, predictions = np.concatenate(labels).astype(int), np.concatenate(predictions)
    keep = labels != 255
    ious = {}
    for c, name in enumerate(data.SYNTHETIC.class_names):
        union = np.sum(keep & ((labels == c) | (predictions == c)))
        ious[name] = np.sum(keep & (labels == c) & (predictions == c)) / union if union else None
    assert metrics["mean_iou"] == pytest.approx(np.mean([v for v in ious.values() if v is not None]), abs=1e-6)
    for name, value in ious.items():
        assert metrics["per_class_iou"][name] == (None if value is None else pytest.approx(value, abs=1e-6))
    lr = [float(v) for v in _column(run / "history.csv", "learning_rate")]
    steps = [4 * (e + 1) for e in range(16)]
    np.testing.assert_allclose(lr, [0.05 * (1 - s / 64) ** 0.9 for s in steps], rtol=1e-4, atol=1e-7)


def _column(path, key):
    with open(path) as f:
        return [row[key] for row in csv.DictReader(f)]


class _Killed(Exception):
    pass


class _KillAtEpoch(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise _Killed()


def test_killed_run_resumes_at_the_same_epoch_and_step(data_dir, tmp_path):
    config = preset("synthetic", data_dir=data_dir, run_dir=str(tmp_path / "run"), epochs=3,
                    **dict(TINY, tensorboard_images=0))
    with pytest.raises(_Killed):
        train(config, extra_callbacks=[_KillAtEpoch(2)], log=lambda *a: None)
    run = tmp_path / "run"
    assert _epochs(run / "history.csv") == [0, 1]
    assert (run / "backup").is_dir() and (run / "best.keras").is_file()
    best_before = max(float(v) for v in _column(run / "history.csv", "val_mean_iou"))
    # Another configuration must not write into this run folder.
    with pytest.raises(ValueError, match="another configuration"):
        train(config.replace(epochs=4), log=lambda *a: None)
    result = train(config, log=lambda *a: None)
    assert len(result["history"]["loss"]) == 1  # only epoch 3 ran again
    assert result["steps"] == 3 * 4
    assert _epochs(run / "history.csv") == [0, 1, 2]
    assert not (run / "backup").exists() and not list(run.glob("*partial*"))
    # best.keras still holds the best val_mean_iou of all three epochs, not of the resumed part.
    best = max(float(v) for v in _column(run / "history.csv", "val_mean_iou"))
    assert best >= best_before
    model = keras.models.load_model(run / "best.keras", safe_mode=True)
    assert model.output_shape == (None, None, None, 10)
    with pytest.raises(ValueError, match="finished run"):
        train(config, log=lambda *a: None)


@pytest.mark.parametrize(
    "options",
    [
        # XLA's CPU backend rejects mixed float16 graphs ("mixed precision is disallowed" in
        # ReluGrad), so on this CPU the two options are tested apart; GPUs take both together.
        dict(mixed_precision=True, clipnorm=1.0, aux_loss_weight=0.4),
        dict(jit_compile=True, clipnorm=1.0),
    ],
    ids=["mixed_float16+clip+aux", "xla+clip"],
)
def test_real_training_options_train_and_restore_the_policy(data_dir, tmp_path, options):
    config = preset("synthetic", data_dir=data_dir, run_dir=str(tmp_path / "run"), epochs=1,
                    **options, **TINY)
    result = train(config, log=lambda *a: None)
    assert np.isfinite(result["history"]["loss"]).all()
    assert np.isfinite(result["metrics"]["mean_iou"])
    assert keras.mixed_precision.global_policy().name == "float32"  # set back after the run
    model = keras.models.load_model(tmp_path / "run" / "final.keras", safe_mode=True)
    # Whatever the training precision, the model hands float32 probabilities to its users.
    probs = model.predict(np.zeros((1, 64, 128, 3), "float32"), verbose=0)
    assert probs.dtype == np.float32 and probs.shape == (1, 64, 128, 10)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-3)


def test_mixed_precision_with_xla_on_a_cpu_is_refused_up_front(data_dir, tmp_path):
    config = preset("synthetic", data_dir=data_dir, run_dir=str(tmp_path / "run"), epochs=1,
                    mixed_precision=True, jit_compile=True, **TINY)
    with pytest.raises(ValueError, match="cannot be combined on a CPU-only machine"):
        train(config, log=lambda *a: None)


def test_a_failed_start_leaves_nothing_that_blocks_the_corrected_command(tmp_path):
    run = tmp_path / "run"
    config = preset("cityscapes", data_dir=str(tmp_path / "empty"), run_dir=str(run))
    with pytest.raises(FileNotFoundError, match="matches no TFRecord files"):
        train(config, log=lambda *a: None)
    assert not run.exists() or not list(run.iterdir())
    # A run folder that an earlier version left with only config.json (no epoch finished) takes
    # another configuration: here too the data check is the only complaint.
    run.mkdir(exist_ok=True)
    config.replace(batch_size=1).to_json(run / "config.json")
    (run / "history.csv").write_text("")  # what CSVLogger left after a kill in epoch 1
    with pytest.raises(FileNotFoundError, match="matches no TFRecord files"):
        train(config, log=lambda *a: None)
    assert not (run / "config.json").exists() and not (run / "history.csv").exists()
