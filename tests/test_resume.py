"""train.py killed (SIGKILL) at several instants, rerun each time: it ends as an uninterrupted run does.

The instants, one after the other in one run folder: inside epoch 1's training steps (killed by
this test), inside TensorFlow's write of epoch 1's checkpoint (the backup's test hook kills the
process as the write merges its shards: `backup/ckpt-1_temp/` stays, as a real kill there
leaves it), and between epoch 2's commit and its history.csv row. Each run is a separate process; the last one resumes at epoch 3.
"""

import csv
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from synergyseg import data
from synergyseg.training.backup import KILL_HOOK

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# DeepLabV3+ (its dropout's seed state is part of what a resume must restore), two-scale with
# the default recipe (eq. 1 and the per-scale losses: fit trains the dict-output model, whose
# optimizer state best/final.keras keep). The state a kill can lose: weights, batch-norm
# statistics, dropout seeds, optimizer slots and step, the batches.
TINY = ["--backbone-width", "8", "--head-filters", "16", "--low-level-filters", "8",
        # Op by op: 9 steps a process do not pay for tracing the training graph (~30 CPU-s each
        # time a killed run starts again); the state a kill can lose is the same either way.
        "--run-eagerly", "true",
        "--crop-size", "64x128", "--batch-size", "2", "--steps-per-epoch", "3", "--epochs", "3",
        "--tensorboard-images", "0", "--learning-rate", "0.05"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    data.synthetic.generate(str(out), num_train=12, num_val=2, height=64, width=128, seed=0,
                            num_shards=2, workers=1, log=None)
    return str(out)


def _command(data_dir, run_dir):
    return [sys.executable, os.path.join(ROOT, "train.py"), "--preset", "synthetic",
            "--data-dir", data_dir, "--run-dir", run_dir, "--no-evaluation", *TINY]


def _env(hook=None):
    # oneDNN stays on: width 8 crashes it only at larger crops (README, Known issues).
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2",
               TF_ENABLE_ONEDNN_OPTS="1")
    env.pop(KILL_HOOK, None)
    if hook:
        env[KILL_HOOK] = hook
    return env


def _run(command, hook=None):
    return subprocess.run(command, env=_env(hook), cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def _run_and_kill_when(command, line_start):
    """Starts `command`, SIGKILLs it as soon as it prints a line starting with `line_start`."""
    process = subprocess.Popen(command, env=_env(), cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in process.stdout:
        seen.append(line)
        if line.startswith(line_start):
            time.sleep(0.5)  # into the epoch's training steps
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "".join(seen)[-3000:]


def _epochs(run_dir):
    with open(os.path.join(run_dir, "history.csv")) as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def _weights(path):
    return keras.models.load_model(path, safe_mode=True).get_weights()


def test_kills_at_any_instant_resume_to_the_uninterrupted_result(data_dir, tmp_path):
    reference, run = str(tmp_path / "reference"), str(tmp_path / "run")
    done = _run(_command(data_dir, reference))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    # 1. Killed inside epoch 1's steps: nothing to resume from, and nothing blocks the rerun.
    _run_and_kill_when(_command(data_dir, run), "Epoch 1/3")
    assert not os.path.exists(os.path.join(run, "backup", "state.json"))
    # 2. Killed inside TensorFlow's write of epoch 1's checkpoint: nothing is committed, no
    # history row, and TensorFlow's shard folder stays (the next run must not trip on it).
    killed = _run(_command(data_dir, run), hook="1:temp")
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:] + killed.stderr[-2000:]
    assert os.listdir(os.path.join(run, "backup")) == ["ckpt-1_temp"]
    assert os.listdir(os.path.join(run, "backup", "ckpt-1_temp"))
    assert not os.path.exists(os.path.join(run, "history.csv"))
    # 3. Rerun, killed after epoch 2's commit but before its history row is written.
    killed = _run(_command(data_dir, run), hook="2:commit")
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:] + killed.stderr[-2000:]
    assert _epochs(run) == [0]
    # 4. Rerun to the end: history.csv is first rewritten from the backup, then epoch 3 runs.
    done = _run(_command(data_dir, run))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Resuming after epoch 2 of 3" in done.stdout
    assert _epochs(run) == [0, 1, 2]
    assert not os.path.exists(os.path.join(run, "backup"))
    assert not [f for f in os.listdir(run) if f.startswith(".")]

    # The same batches, weights, optimizer state and dropout seeds as the uninterrupted run.
    for a, b in zip(_weights(os.path.join(reference, "final.keras")),
                    _weights(os.path.join(run, "final.keras"))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    with open(os.path.join(reference, "history.csv")) as f:
        expected = list(csv.DictReader(f))
    with open(os.path.join(run, "history.csv")) as f:
        got = list(csv.DictReader(f))
    np.testing.assert_allclose([float(r["loss"]) for r in got],
                               [float(r["loss"]) for r in expected], rtol=1e-4)
    # The default recipe ran: each scale's loss is in the history, and final.keras kept the
    # optimizer's state (its step count after 3 epochs of 3 steps).
    np.testing.assert_allclose([float(r["s_lo_loss"]) for r in got],
                               [float(r["s_lo_loss"]) for r in expected], rtol=1e-4)
    assert int(keras.models.load_model(os.path.join(run, "final.keras")).optimizer.iterations) == 9


def _tiny_model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization(),
                              keras.layers.Dropout(0.5), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


def _backup(model, tmp_path):
    from synergyseg.training.backup import RunBackup

    return RunBackup(str(tmp_path / "backup"), list(model.variables) + list(model.optimizer.variables),
                     history_csv=str(tmp_path / "history.csv"))


def test_backup_refuses_non_finite_batch_norm_statistics_and_keeps_the_last_good_state(tmp_path):
    from synergyseg.training.callbacks import TerminateOnNaN

    model = _tiny_model()
    model.fit(np.ones((8, 4), "float32"), np.ones((8, 2), "float32"), epochs=1, verbose=0)
    backup = _backup(model, tmp_path)
    nan_stop = TerminateOnNaN(backup)
    nan_stop.set_model(model)
    with pytest.raises(FloatingPointError, match="No epoch finished"):
        nan_stop.on_batch_end(0, {"loss": float("nan")})
    backup.save(1, [{"epoch": 0, "loss": 1.5}])
    good = [np.array(v) for v in model.variables]
    # What lr 1e6 did: finite loss, non-finite moving variances.
    variance = next(v for v in model.variables if "moving_variance" in v.path)
    variance.assign(np.full(variance.shape, np.nan, "float32"))
    with pytest.raises(FloatingPointError, match=r"moving_variance.*end of epoch 1 .*checked finite"):
        backup.save(2, backup.rows + [{"epoch": 1, "loss": 0.5}])
    with pytest.raises(FloatingPointError, match=r"end of epoch 1"):
        nan_stop.on_batch_end(0, {"loss": float("nan")})

    restored_model = _tiny_model()
    restored = _backup(restored_model, tmp_path)
    assert restored.restore() == (1, [{"epoch": 0, "loss": 1.5}])
    for a, b in zip(good, restored_model.variables):  # weights, statistics, dropout seed state
        np.testing.assert_array_equal(a, np.array(b))
    assert int(restored_model.optimizer.iterations.numpy()) == 1
    with open(tmp_path / "history.csv") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["0"]


def test_restore_deletes_a_checkpoint_no_state_names(tmp_path):
    model = _tiny_model()
    backup = _backup(model, tmp_path)
    backup.save(1, [{"epoch": 0, "loss": 1.0}])
    stray = tmp_path / "backup" / "ckpt-2.index"
    stray.write_bytes(b"cut off by a kill")
    # What a kill inside TensorFlow's write leaves: the shards in a `_temp` folder.
    shards = tmp_path / "backup" / "ckpt-2_temp"
    shards.mkdir()
    (shards / "part-00000-of-00001.index").write_bytes(b"shard")
    assert _backup(_tiny_model(), tmp_path).restore()[0] == 1
    assert not stray.exists() and not shards.exists()
    assert {p.name.split(".")[0] for p in (tmp_path / "backup").iterdir()} == {"ckpt-1", "state"}
