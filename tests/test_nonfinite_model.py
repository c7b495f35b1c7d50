"""No model with a NaN or infinite variable is written by a run, nor scored, served or exported.

A learning rate high enough to diverge between two epochs leaves a finite loss and non-finite
batch-norm variances; such a model predicts one class everywhere.
"""

import os

import keras
import numpy as np
import pytest
from PIL import Image

import evaluate
import synergyseg
from synergyseg import data
from synergyseg.export import cli as export_cli
from synergyseg.predict import cli as predict_cli
from synergyseg.run_folder import save_model
from synergyseg.training import callbacks as cb
from synergyseg.training.config import preset
from synergyseg.training.run import train

# The smallest model: LR-ASPP on a narrow ResNet-18 at the full scale alone (fusion "high"). The
# refusals below look at every variable, whatever the head or fusion; a small graph builds,
# traces and exports in a fraction of the two-scale DeepLabV3+ model's time.
TINY = dict(backbone="resnet18", backbone_width=8, head="lraspp", head_filters=16, fusion="high")


def _spoil(model):
    """Puts NaN into the first batch-norm moving variance of `model`; returns its path."""
    variance = next(v for v in model.weights if "moving_variance" in v.path)
    variance.assign(np.full(variance.shape, np.nan, "float32"))
    return variance.path


@pytest.fixture(scope="module")
def diverged(tmp_path_factory):
    """(a .keras file from elsewhere whose batch-norm variance is NaN, that variable's path)."""
    model = synergyseg.build_synergyseg(10, **TINY)
    name = _spoil(model)
    path = tmp_path_factory.mktemp("diverged") / "diverged.keras"
    model.save(path)  # Keras's own save, as a file made elsewhere would be
    return path, name


def test_evaluate_refuses_the_model_naming_file_and_variable(diverged, tmp_path):
    path, name = diverged
    with pytest.raises(ValueError, match="NaN or infinity") as error:
        evaluate.main([str(path), "--data", str(tmp_path / "val-*.tfrecord"), "--no-progress"])
    assert str(path) in str(error.value) and name in str(error.value)
    with pytest.raises(ValueError, match=name):
        evaluate.main([str(path), "--speed-only", "--speed-size", "32x32"])
    assert not os.path.exists(str(path)[:-len(".keras")] + "-evaluation")


def test_predict_refuses_the_model_with_exit_2(diverged, tmp_path, capsys):
    path, name = diverged
    picture = tmp_path / "street.png"
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(picture)
    assert predict_cli.main([str(path), str(picture), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and name in err and "NaN or infinity" in err
    assert not (tmp_path / "out").exists()
    # A loaded model handed over in memory is refused too, and a SavedModel written from it.
    model = keras.models.load_model(path, safe_mode=True)
    with pytest.raises(ValueError, match=name):
        synergyseg.Segmenter(model)
    from synergyseg.export.saved_model import export_saved_model

    saved = export_saved_model(model, str(tmp_path / "saved_model"))
    with pytest.raises(ValueError, match=f"{saved}: variable .*moving_variance.* NaN or infinity"):
        synergyseg.Segmenter(saved)


def test_export_refuses_the_model_with_exit_2(diverged, tmp_path, capsys):
    path, name = diverged
    out = tmp_path / "export"
    assert export_cli.main([str(path), "--out", str(out), "--formats", "saved_model"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and name in err
    assert not out.exists() and os.listdir(tmp_path) == []  # no staging folder either
    from synergyseg.export import export_model

    with pytest.raises(ValueError, match=name):
        export_model(keras.models.load_model(path, safe_mode=True), out, formats=("onnx",), log=None)


def test_no_model_file_is_written_from_non_finite_weights(diverged, tmp_path):
    model = keras.models.load_model(diverged[0], safe_mode=True)
    with pytest.raises(ValueError, match=diverged[1]):
        save_model(model, tmp_path / "final.keras")
    checkpoint = cb.SafeModelCheckpoint(str(tmp_path / "best.keras"), monitor="val_mean_iou",
                                        mode="max", save_best_only=True)
    checkpoint.set_model(model)
    with pytest.raises(ValueError, match=diverged[1]):
        checkpoint.on_epoch_end(0, {"val_mean_iou": 0.5})
    assert os.listdir(tmp_path) == []  # neither the file nor a partial or hidden one


class _DivergeAtEndOfFirstEpoch(keras.callbacks.Callback):
    """What a too-high learning rate does between epochs: finite loss, NaN batch-norm variance."""

    def __init__(self, steps):
        super().__init__()
        self.steps = steps

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.steps - 1:
            self.variable = _spoil(self.model)


def test_a_diverged_epoch_stops_the_run_before_best_keras_is_written(tmp_path):
    data.synthetic.generate(str(tmp_path / "data"), num_train=4, num_val=2, height=64, width=128,
                            seed=0, num_shards=1, workers=1, log=None)
    run = tmp_path / "run"
    # Eagerly: four steps do not pay for tracing the training graph; the check is the callbacks'.
    config = preset("synthetic", data_dir=str(tmp_path / "data"), run_dir=str(run), epochs=2,
                    crop_size=(64, 128), batch_size=2, steps_per_epoch=2, tensorboard_images=0,
                    run_eagerly=True, **TINY)
    diverge = _DivergeAtEndOfFirstEpoch(config.steps_per_epoch)
    # The first epoch is always the best so far: Keras's checkpoint would save it.
    with pytest.raises(FloatingPointError, match="NaN or infinity after epoch 1") as error:
        train(config, extra_callbacks=[diverge], log=lambda *a: None)
    assert diverge.variable in str(error.value)
    assert "No epoch finished" in str(error.value)
    assert not (run / "best.keras").exists() and not (run / "final.keras").exists()
    assert not list(run.glob("*partial*")) and not list(run.glob(".*"))
