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
# The smallest model a run trains: LR-ASPP on the ResNet-18 trunk at the full scale alone (fusion
# "high" computes no second scale). Tracing (and XLA's compile) grows with the graph: this one
# traces in about 40% of the two-scale DeepLabV3+ model's time. Used where the property is about
# the run (resume, the best-model file, XLA with clipping), not about the paper's model, which the
# short run trains.
LIGHT = dict(TINY, head="lraspp", fusion="high")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    data.synthetic.generate(str(out), num_train=16, num_val=4, height=64, width=128, seed=0,
                            num_shards=2, workers=1, log=None)
    return str(out)


def _epochs(history_csv):
    with open(history_csv) as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


# The short run: 3 epochs of 8 steps. Fewer steps than 16 epochs of 4, and far less per-epoch work
# (validation, best.keras, the backup, the validation images), which costs more than the steps;
# the loss and mIoU checks below still hold by a wide margin (loss to ~0.5x, mIoU ~3.5x the
# constant prediction's).
SHORT_EPOCHS, SHORT_STEPS = 3, 8


def test_short_run_lowers_loss_and_beats_a_constant_prediction(data_dir, tmp_path):
    config = preset("synthetic", data_dir=data_dir, run_dir=str(tmp_path / "run"),
                    epochs=SHORT_EPOCHS, learning_rate=0.05, scale_range=None,
                    **dict(TINY, steps_per_epoch=SHORT_STEPS))
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
    mean, ious = _numpy_scores(model, data_dir)
    assert metrics["mean_iou"] == pytest.approx(mean, abs=1e-6)
    for name, value in ious.items():
        assert metrics["per_class_iou"][name] == (None if value is None else pytest.approx(value, abs=1e-6))
    # best.keras is the best epoch's model: it scores the best val_mean_iou of history.csv. (This
    # run's mIoU still climbs at the end; the resume test below has a best epoch before the last.)
    val = [float(v) for v in _column(run / "history.csv", "val_mean_iou")]
    best, _ = _numpy_scores(keras.models.load_model(run / "best.keras", safe_mode=True), data_dir)
    assert best == pytest.approx(max(val), abs=1e-6)
    lr = [float(v) for v in _column(run / "history.csv", "learning_rate")]
    total = SHORT_EPOCHS * SHORT_STEPS
    steps = [SHORT_STEPS * (e + 1) for e in range(SHORT_EPOCHS)]
    np.testing.assert_allclose(lr, [0.05 * (1 - s / total) ** 0.9 for s in steps], rtol=1e-4, atol=1e-7)


def _numpy_scores(model, data_dir):
    """(mean IoU, {class name: IoU or None}) of `model` on the validation shards, in numpy."""
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
    return float(np.mean([v for v in ious.values() if v is not None])), ious


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


class _SpoilAtEpoch(keras.callbacks.Callback):
    """Zeroes every trainable weight when epoch `epoch` begins: that epoch scores far below the
    earlier ones, so a resumed run that forgot the earlier best would overwrite best.keras."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            for variable in self.model.trainable_variables:
                variable.assign(keras.ops.zeros(variable.shape, variable.dtype))


class _FirstStepUpdate(keras.callbacks.Callback):
    """Records the trainable weights and the learning rate around the run's first optimizer step."""

    def __init__(self):
        super().__init__()
        self.before = self.after = None

    def on_train_batch_begin(self, batch, logs=None):
        if self.before is None:
            self.before = [keras.ops.convert_to_numpy(v) for v in self.model.trainable_variables]
            self.learning_rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_train_batch_end(self, batch, logs=None):
        if self.after is None:
            self.after = [keras.ops.convert_to_numpy(v) for v in self.model.trainable_variables]


def test_killed_run_resumes_at_the_same_epoch_and_step(data_dir, tmp_path):
    # The short run's learning rate: two epochs score above the zeroed weights' constant map.
    # The light model: resuming, the refusal and best.keras do not depend on the head or fusion.
    # Eagerly (12 steps: no trace of the training graph); the short run trains compiled.
    config = preset("synthetic", data_dir=data_dir, run_dir=str(tmp_path / "run"), epochs=3,
                    learning_rate=0.05, scale_range=None, run_eagerly=True,
                    **dict(LIGHT, tensorboard_images=0))
    with pytest.raises(_Killed):
        train(config, extra_callbacks=[_KillAtEpoch(2)], log=lambda *a: None)
    run = tmp_path / "run"
    assert _epochs(run / "history.csv") == [0, 1]
    assert (run / "backup").is_dir() and (run / "best.keras").is_file()
    best_before = max(float(v) for v in _column(run / "history.csv", "val_mean_iou"))
    # Another configuration must not write into this run folder; the refusal names the field.
    with pytest.raises(ValueError, match="another configuration .*epochs: 3 there, 4 now"):
        train(config.replace(epochs=4), log=lambda *a: None)
    # The run folder is moved and its path typed with a trailing slash: the run still resumes.
    moved = tmp_path / "moved"
    run.rename(moved)
    run = moved
    config = config.replace(run_dir=f"{moved}/")
    # The resumed epoch starts from zeroed weights, so it scores below the best of the first two.
    result = train(config, extra_callbacks=[_SpoilAtEpoch(2)], log=lambda *a: None)
    assert len(result["history"]["loss"]) == 1  # only epoch 3 ran again
    assert result["steps"] == 3 * 4
    assert _epochs(run / "history.csv") == [0, 1, 2]
    assert not (run / "backup").exists() and not list(run.glob("*partial*"))
    # best.keras still holds the best of all three epochs (initial_value_threshold from the
    # backup's rows), not the resumed epoch's model, which a fresh ModelCheckpoint would keep.
    val = [float(v) for v in _column(run / "history.csv", "val_mean_iou")]
    assert val[2] < best_before - 1e-3, val
    model = keras.models.load_model(run / "best.keras", safe_mode=True)
    assert model.output_shape == (None, None, None, 10)
    assert _numpy_scores(model, data_dir)[0] == pytest.approx(best_before, abs=1e-6)
    with pytest.raises(ValueError, match="finished run"):
        train(config, log=lambda *a: None)


@pytest.mark.parametrize(
    "options",
    [
        # XLA's CPU backend rejects mixed float16 graphs ("mixed precision is disallowed" in
        # ReluGrad), so on this CPU the two options are tested apart; GPUs take both together.
        # Two scales (the auxiliary loss needs both scales' outputs) with the LR-ASPP head, which
        # traces in 75% of DeepLabV3+'s time: float16 layers, loss scaling, clipping and the
        # per-scale losses work on any head (DeepLabV3+ predicting under mixed_float16:
        # test_synergy.py).
        # The per-scale losses are the default of a two-scale fusion (weight 0.4); none with "high".
        dict(mixed_precision=True, clipnorm=1.0, **dict(TINY, head="lraspp")),
        # The light model: XLA's compile dominates this case and grows with the graph; XLA and
        # the per-variable clipping act on whatever graph and variables the model has. No
        # validation images: their model is not compiled, so XLA never runs them (the other
        # case and the short run write them).
        dict(jit_compile=True, clipnorm=1.0, **dict(LIGHT, tensorboard_images=0)),
    ],
    ids=["mixed_float16+clip+default_aux", "xla+clip"],
)
def test_real_training_options_train_and_restore_the_policy(data_dir, tmp_path, options):
    config = preset("synthetic", data_dir=data_dir, run_dir=str(tmp_path / "run"), epochs=1,
                    **options)
    first_step = _FirstStepUpdate()
    result = train(config, extra_callbacks=[first_step], log=lambda *a: None)
    history = result["history"]
    assert np.isfinite(history["loss"]).all()
    assert np.isfinite(result["metrics"]["mean_iou"])
    # Keras's SGD clips each gradient to norm `clipnorm`, decays (w -= lr * wd * w), then steps
    # with an empty momentum buffer: the first step moves each weight by lr * (clipped gradient)
    # beyond the decay. None goes further; some reach the bound (their gradients were clipped),
    # which a global clip, or none, would not give.
    clipnorm, weight_decay = options["clipnorm"], config.weight_decay
    bound = first_step.learning_rate * clipnorm
    steps = np.array([np.linalg.norm(after - before * (1 - first_step.learning_rate * weight_decay))
                      for before, after in zip(first_step.before, first_step.after)])
    assert steps.max() <= bound * (1 + 1e-3), (steps.max(), bound)
    assert (steps > 0.99 * bound).sum() >= 5, np.sort(steps)[-10:] / bound
    if config.fusion == "high":
        assert "s_lo_loss" not in history and "s_hi_loss" not in history, sorted(history)
    else:
        # Each scale's own loss is logged, and the loss is the fused one plus the weighted others.
        weight = 0.4
        for name in ("fused_loss", "s_lo_loss", "s_hi_loss"):
            assert name in history and np.isfinite(history[name]).all(), sorted(history)
        np.testing.assert_allclose(
            history["loss"], np.add(history["fused_loss"],
                                    weight * np.add(history["s_lo_loss"], history["s_hi_loss"])),
            rtol=1e-3)
    # best.keras is written (with the aux loss on too) and is the served single-output model of
    # the best epoch (here the only one).
    best = keras.models.load_model(tmp_path / "run" / "best.keras", safe_mode=True)
    assert best.output_shape == (None, None, None, 10)
    final = keras.models.load_model(tmp_path / "run" / "final.keras", safe_mode=True)
    # final.keras is the same model as best.keras (same configuration, compile settings and
    # weights), so one of the two is run below: each loaded model traces (under XLA, compiles)
    # its own predict function.
    assert final.get_config() == best.get_config()
    assert final.get_compile_config() == best.get_compile_config()
    for saved, trained in zip(best.weights, final.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(saved), keras.ops.convert_to_numpy(trained))
    # float16 activations: predict's and fit's graphs may round a near-tied pixel apart.
    tolerance = 1e-3 if options.get("mixed_precision") else 1e-6
    assert _numpy_scores(best, data_dir)[0] == pytest.approx(history["val_mean_iou"][0], abs=tolerance)
    assert keras.mixed_precision.global_policy().name == "float32"  # set back after the run
    # Whatever the training precision, the model hands float32 probabilities to its users.
    probs = best.predict(np.zeros((1, 64, 128, 3), "float32"), verbose=0)
    assert probs.dtype == np.float32 and probs.shape == (1, 64, 128, 10)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-3)


def test_mixed_precision_with_xla_on_a_cpu_is_refused_up_front(data_dir, tmp_path):
    config = preset("synthetic", data_dir=data_dir, run_dir=str(tmp_path / "run"), epochs=1,
                    mixed_precision=True, jit_compile=True, **TINY)
    with pytest.raises(ValueError, match="cannot be combined on a CPU-only machine"):
        train(config, log=lambda *a: None)


def test_run_eagerly_is_refused_with_a_compiled_graph_option():
    for other in (dict(jit_compile=True), dict(strategy="multiworker")):
        with pytest.raises(ValueError, match="run_eagerly=True runs no compiled graph"):
            preset("synthetic", run_eagerly=True, **other)
    assert preset("synthetic", run_eagerly=True).run_eagerly and not preset("synthetic").run_eagerly


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


def test_a_run_written_before_a_field_existed_resumes_as_that_fields_default(tmp_path):
    # A config.json from an earlier synergyseg lacks the fields added since: that run had their
    # default behaviour, so the same command resumes it; a non-default value now is a difference.
    from synergyseg.training.run import config_differences

    config = preset("synthetic", run_dir=str(tmp_path / "run"))
    saved = tmp_path / "config.json"
    older = {k: v for k, v in json.loads(json.dumps(config.to_dict())).items() if k != "run_eagerly"}
    saved.write_text(json.dumps(older))
    assert RunConfig().run_eagerly is False and config.run_eagerly is False
    assert config_differences(config, saved) == []
    assert config_differences(config.replace(run_eagerly=True), saved) == ["run_eagerly: False there, True now"]
    assert config_differences(config.replace(epochs=3), saved) == [f"epochs: {config.epochs} there, 3 now"]


def test_a_run_is_compared_by_the_auxiliary_weight_it_trains_with(tmp_path):
    # None (the default) is 0.4 with a two-scale fusion: a run written with 0.4 spelled out is the
    # same run; one written with 0 (the paper's recipe, the default before the fusion study) is not,
    # and the difference names the weights, not None.
    from synergyseg.training.run import config_differences

    config = preset("synthetic", run_dir=str(tmp_path / "run"))
    saved = tmp_path / "config.json"
    for written, expected in ((0.4, []), (None, []), (0.0, ["aux_loss_weight: 0.0 there, 0.4 now"])):
        saved.write_text(json.dumps(dict(json.loads(json.dumps(config.to_dict())), aux_loss_weight=written)))
        assert config_differences(config, saved) == expected, written
    # A config.json from before the field existed trained with the fused loss only.
    older = {k: v for k, v in json.loads(json.dumps(config.to_dict())).items() if k != "aux_loss_weight"}
    saved.write_text(json.dumps(older))
    assert config_differences(config, saved) == ["aux_loss_weight: 0.0 there, 0.4 now"]
    assert config_differences(config.replace(aux_loss_weight=0.0), saved) == []
    # With one scale the default is 0: an older single-scale run resumes with the same command.
    high = config.replace(fusion="high")
    saved.write_text(json.dumps({k: v for k, v in json.loads(json.dumps(high.to_dict())).items()
                                 if k != "aux_loss_weight"}))
    assert config_differences(high, saved) == []
