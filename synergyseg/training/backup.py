"""RUN/backup: the state of a run's last finished epoch, so a run killed at any instant resumes.

    backup = RunBackup("runs/x/backup", variables)   # model + optimizer variables, built
    epoch, rows = backup.restore()                   # 0, [] for a new run
    backup.save(epoch + 1, rows + [logs])            # after each epoch

One commit point: the checkpoint files (`ckpt-<epoch>.*`, a `tf.train.Checkpoint` of every
variable: weights, batch-norm statistics, dropout seed states, optimizer slots and step) are
written first, then `state.json` (atomic rename) names them together with the epoch count and
every finished epoch's logs. A kill before the rename leaves the previous state, a kill after it
the new one; `history.csv` is rewritten from the rows in `state.json`, so history and weights
always agree. Files and folders no state names (a checkpoint cut off by a kill, TensorFlow's
`ckpt-<epoch>_temp/` shard folder of a write killed before its merge) are deleted on restore.
"""

import contextlib
import csv
import glob
import json
import os
import shutil
import signal
import tempfile

import tensorflow as tf

from synergyseg.atomic import atomic_output, remove, write_text
from synergyseg.run_folder import non_finite_variables

STATE = "state.json"
# Test hook: SIGKILLs the process while saving the state after epoch <epoch> (finished epochs,
# from 1). "<epoch>:temp": inside TensorFlow's checkpoint write, as its merge step starts (the
# shards are in `ckpt-<epoch>_temp/`, nothing under the final name); "<epoch>:commit": after
# state.json, before history.csv.
KILL_HOOK = "SYNERGYSEG_TEST_KILL_IN_BACKUP"


def _kill_hook(epoch, stage):
    return os.environ.get(KILL_HOOK) == f"{epoch}:{stage}"


def _kill_here(epoch, stage):
    if _kill_hook(epoch, stage):
        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def _killed_before_merge(epoch):
    """Test hook "<epoch>:temp": SIGKILL inside `Checkpoint.write` when it merges its shards."""
    if not _kill_hook(epoch, "temp"):
        yield
        return
    from tensorflow.python.ops import gen_io_ops  # the op the eager write calls to merge

    merge = gen_io_ops.merge_v2_checkpoints

    def kill(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    gen_io_ops.merge_v2_checkpoints = kill
    try:
        yield
    finally:
        gen_io_ops.merge_v2_checkpoints = merge


def write_history(path, rows):
    """Writes `rows` (one dict of logs per epoch, with "epoch") as a CSV, atomically."""
    keys = ["epoch"] + sorted({k for row in rows for k in row} - {"epoch"})
    with atomic_output(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, keys, restval="")
            writer.writeheader()
            writer.writerows(rows)


class RunBackup:
    """Saves and restores the run state in `directory` (see the module docstring).

    Args:
        directory: the backup folder (created on the first save).
        variables: every variable of the state, in a fixed order (model then optimizer); the
            optimizer must be built so its slots exist.
        history_csv: file rewritten from the rows on each save and restore (None: none).
        writer: False on a multi-worker run's other workers: they restore from `directory` (the
            chief's, on a shared file system) and take part in each save (reading a variable
            may be a collective op) by writing into a temporary folder that is then deleted; they
            never commit or delete anything in `directory`.
    """

    def __init__(self, directory, variables, history_csv=None, writer=True):
        self.directory = directory
        self.variables = list(variables)
        self.history_csv = history_csv
        self.writer = writer
        self._checkpoint = tf.train.Checkpoint(variables=self.variables)
        self.epoch = 0
        self.rows = []

    @property
    def state_path(self):
        return os.path.join(self.directory, STATE)

    def _prefix(self, epoch):
        return os.path.join(self.directory, f"ckpt-{epoch}")

    def _read_state(self):
        if not os.path.exists(self.state_path):
            return None
        with open(self.state_path) as f:
            try:
                return json.load(f)
            except json.JSONDecodeError as e:  # never happens with atomic writes; say so if it does
                raise ValueError(f"{self.state_path}: unreadable ({e}); delete {self.directory} "
                                 "to restart the run from epoch 0") from e

    def restore(self):
        """Loads the last committed state; returns (finished epochs, their log rows)."""
        state = self._read_state()
        self._delete_uncommitted(state)
        if state is None:
            self.epoch, self.rows = 0, []
        else:
            prefix = os.path.join(self.directory, state["checkpoint"])
            try:
                self._checkpoint.read(prefix).assert_consumed()
            except (tf.errors.OpError, AssertionError, ValueError) as e:
                raise ValueError(
                    f"{prefix}: cannot restore the backup of epoch {state['epoch']} into this "
                    f"model ({str(e).splitlines()[0]}); was RUN/config.json edited?") from e
            self.epoch, self.rows = int(state["epoch"]), list(state["history"])
        if self.writer and self.history_csv and (self.rows or os.path.exists(self.history_csv)):
            write_history(self.history_csv, self.rows)
        return self.epoch, list(self.rows)

    def check_finite(self, epoch):
        """Raises FloatingPointError (naming a variable and the last good state) if any variable
        of the state holds NaN or infinity after `epoch` finished epochs."""
        bad = non_finite_variables(self.variables)
        if bad:
            raise FloatingPointError(
                f"{len(bad)} variables hold NaN or infinity after epoch {epoch} (e.g. {bad[0]}); "
                f"stopping. {self.describe()} Try a lower learning_rate, --clipnorm 1.0 or a "
                "warm-up (--warmup-steps) in a new --run-dir.")

    def save(self, epoch, rows):
        """Commits the current variables as the state after `epoch` finished epochs."""
        self.check_finite(epoch)
        if not self.writer:
            with tempfile.TemporaryDirectory(prefix="synergyseg-backup-") as scratch:
                self._checkpoint.write(os.path.join(scratch, "ckpt"))
            self.epoch, self.rows = epoch, list(rows)
            return
        os.makedirs(self.directory, exist_ok=True)
        prefix = self._prefix(epoch)
        with _killed_before_merge(epoch):
            self._checkpoint.write(prefix)
        # Python's JSON keeps NaN (e.g. the IoU of a class absent from validation) as NaN.
        write_text(self.state_path, json.dumps(
            {"epoch": epoch, "checkpoint": os.path.basename(prefix), "history": rows}, indent=1))
        _kill_here(epoch, "commit")
        self.epoch, self.rows = epoch, list(rows)
        if self.history_csv:
            write_history(self.history_csv, self.rows)
        self._delete_uncommitted({"checkpoint": os.path.basename(prefix)})

    def describe(self):
        """Where the last good state is, for error messages."""
        if self.epoch == 0:
            return ("No epoch finished, so there is no saved state to resume from "
                    f"({self.directory} is empty).")
        return (f"The last good state, the end of epoch {self.epoch} (all its variables checked "
                f"finite), is in {self.directory}.")

    def _delete_uncommitted(self, state):
        if not self.writer or not os.path.isdir(self.directory):
            return
        keep = (state or {}).get("checkpoint")
        for path in glob.glob(os.path.join(self.directory, "ckpt-*")):
            # Folders too: TensorFlow writes the shards into `ckpt-<epoch>_temp/` before its merge.
            if keep is None or not os.path.basename(path).startswith(keep + "."):
                remove(path)
        # tf's own index file (this backup never reads it).
        remove(os.path.join(self.directory, "checkpoint"))

    def delete(self):
        """Removes the backup folder (when the run has finished)."""
        if self.writer:
            shutil.rmtree(self.directory, ignore_errors=True)
