import os

# Quiet TF's C++ logging and keep tests on the CPU's deterministic kernels.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# Under pytest-xdist (the README's test command runs `-n 2`) each worker process gets its share of
# the cores for TensorFlow's compute threads, so that the workers do not oversubscribe them (spinning
# threads on shared cores waste the CPU); child processes inherit the share. A value the user set wins.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(max(1, (os.cpu_count() or 1) // _workers)))
# TFLite files must run in ai-edge-litert: make_interpreter's tf.lite fallback raises instead.
os.environ["SYNERGYSEG_REQUIRE_LITERT"] = "1"


# --- one tiny trained run and its export, made once per test session ----------------------------
#
# `synthetic_run` and `synthetic_export` are what several test files need: a run folder that
# train.py's code path wrote, and every artifact synergyseg.export makes of it. Each is built once
# per session; under pytest-xdist the first worker that needs one builds it and the others wait
# for it and read the same files. Both are read-only for their users: a test that changes a run
# folder or an export copies it into its own tmp_path first.

try:
    import fcntl
except ImportError:  # no file locks (Windows): each xdist worker builds its own copy
    fcntl = None

import json
import shutil
import types

import pytest

# Scene size of the session's synthetic set, also its training crop and its TFLite input size.
SYNTHETIC_RUN_SIZE = (48, 96)
# The fixed input on which the trained model's in-memory prediction is recorded (synthetic_run).
FINAL_INPUT_SHAPE = (1, 32, 48, 3)


def _built_once(tmp_path_factory, name, build):
    """`(folder, record)`: `build(folder)` fills `folder` and returns a JSON-able `record`, once
    per test session, also across pytest-xdist workers (they share the parent of their temporary
    folders). The record, written last, marks a finished build: a worker killed while building
    leaves none, and the next one builds again from scratch."""
    base = tmp_path_factory.getbasetemp()
    shared = os.environ.get("PYTEST_XDIST_WORKER") is not None and fcntl is not None
    root = base.parent if shared else base
    folder, record_path = root / name, root / f"{name}.json"
    with open(root / f"{name}.lock", "w") as lock:
        if shared:
            fcntl.flock(lock, fcntl.LOCK_EX)
        if not record_path.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            record = build(folder)
            partial = root / f"{name}.json.partial"
            partial.write_text(json.dumps(record))
            os.replace(partial, record_path)
    return folder, json.loads(record_path.read_text())


def _train_synthetic_run(folder):
    import keras
    import numpy as np

    from synergyseg import data
    from synergyseg.training.config import preset
    from synergyseg.training.run import train

    height, width = SYNTHETIC_RUN_SIZE
    data.synthetic.generate(str(folder / "data"), num_train=16, num_val=4, height=height,
                            width=width, seed=0, num_shards=1, workers=1, log=None)
    x = np.random.default_rng(2).uniform(0, 255, FINAL_INPUT_SHAPE).astype("float32")

    class FinalPrediction(keras.callbacks.Callback):
        """The trained model's prediction in memory, before train() saves final.keras."""

        def on_train_end(self, logs=None):
            np.save(folder / "final_input.npy", x)
            predicted = self.model.predict(x, verbose=0)
            # Trained with the default per-scale losses, fit's model returns every scale's map.
            np.save(folder / "final_probabilities.npy",
                    predicted["fused"] if isinstance(predicted, dict) else predicted)

    # The tiny model of test_train_run.py with a 2-step warm-up (best.keras / final.keras then hold
    # a WarmupPolynomialDecay that warms up). 160 SGD steps (4 epochs of 40): int8 and float16
    # exports need a confident model (an untrained one's near-uniform probabilities flip their
    # argmax under any rounding), and BatchNorm's moving statistics (momentum 0.99), which
    # inference uses, need ~100 updates to follow the trained weights. Measured: validation mIoU
    # 0.277 (80 steps: 0.121, below test_export.py's 0.2 for a model that segments). Few epochs:
    # each one validates, checkpoints and plots, which costs more than its steps.
    config = preset(
        "synthetic", data_dir=str(folder / "data"), run_dir=str(folder / "run"), epochs=4,
        steps_per_epoch=40, batch_size=4, learning_rate=0.05, warmup_steps=2, scale_range=None,
        crop_size=SYNTHETIC_RUN_SIZE, backbone="resnet18", backbone_width=8, head_filters=16,
        low_level_filters=8, tensorboard_images=0)
    result = train(config, extra_callbacks=[FinalPrediction()], log=lambda *a: None)
    return {"metrics": result["metrics"], "steps": result["steps"]}


@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory):
    """A tiny run folder written by `synergyseg.training.run.train` (train.py's code path), once
    per session. Read-only: copy it to change it.

    Attributes:
        size: `SYNTHETIC_RUN_SIZE` (height, width).
        data_dir: the synthetic set (seed 0): train-*.tfrecord (16 scenes), val-*.tfrecord (4).
        run_dir: config.json, best.keras, final.keras, metrics.json, history.csv, ...
        metrics: metrics.json's dict; steps: the optimizer steps taken.
        final_input, final_probabilities: an input (`FINAL_INPUT_SHAPE`, float32) and the trained
            model's prediction for it in memory, before final.keras was written.
    """
    import numpy as np

    folder, record = _built_once(tmp_path_factory, "synthetic_run", _train_synthetic_run)
    return types.SimpleNamespace(
        size=SYNTHETIC_RUN_SIZE, data_dir=folder / "data", run_dir=folder / "run", **record,
        final_input=np.load(folder / "final_input.npy"),
        final_probabilities=np.load(folder / "final_probabilities.npy"))


@pytest.fixture(scope="session")
def synthetic_export(synthetic_run, tmp_path_factory):
    """`export_model` of `synthetic_run` with every format: `{artifact: path}` for "saved_model",
    "tflite_float32", "tflite_float16", "tflite_int8" (at `SYNTHETIC_RUN_SIZE`; int8 calibrated
    on 8 training scenes), "onnx" and "metadata", all in one folder that holds nothing else.
    Once per session; read-only."""
    def build(folder):
        from synergyseg.export import export_model

        exported = export_model(synthetic_run.run_dir, folder / "synthetic",
                                tflite_size=SYNTHETIC_RUN_SIZE,
                                calibration=str(synthetic_run.data_dir / "train-*"),
                                num_calibration_images=8, log=None)
        return {artifact: os.path.relpath(path, folder) for artifact, path in exported.items()}

    folder, record = _built_once(tmp_path_factory, "synthetic_export", build)
    return {artifact: str(folder / path) for artifact, path in record.items()}


# Under CI (SYNERGYSEG_NO_SKIPS=1, set by .ci/run) a skipped test fails the run.
from tests.ci_skips import pytest_sessionfinish, pytest_terminal_summary  # noqa: E402,F401
