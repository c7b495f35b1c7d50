"""A write killed inside `atomic_output` leaves a hidden staging folder; the next write into the
same folder removes it, and never the staging of a write still in progress."""

import os
import signal
import subprocess
import sys

import pytest

from synergyseg import atomic
from synergyseg.atomic import atomic_output, write_text

# A child that loads atomic.py alone (no TensorFlow import) and is killed mid-write.
_KILLED_WRITE = """
import importlib.util, os, signal, sys
spec = importlib.util.spec_from_file_location("atomic", sys.argv[1])
atomic = importlib.util.module_from_spec(spec)
spec.loader.exec_module(atomic)
with atomic.atomic_output(sys.argv[2]) as tmp:
    open(tmp, "wb").write(b"half a video")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def live_pid():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield child.pid
    child.kill()
    child.wait()


def _hidden(folder):
    return sorted(n for n in os.listdir(folder) if n.startswith("."))


def test_a_killed_writes_staging_is_removed_by_the_next_write(tmp_path):
    video = tmp_path / "drive_overlay.mp4"
    killed = subprocess.run([sys.executable, "-c", _KILLED_WRITE, atomic.__file__, str(video)])
    assert killed.returncode == -signal.SIGKILL
    [leftover] = _hidden(tmp_path)
    assert not video.exists()
    assert os.listdir(tmp_path / leftover) == ["drive_overlay.mp4"]
    # A write of another file into the same folder (a rerun over other inputs) removes it too.
    write_text(tmp_path / "other.txt", "done")
    assert sorted(os.listdir(tmp_path)) == ["other.txt"]


def test_only_dead_writes_staging_is_removed(tmp_path, live_pid):
    dead = _dead_pid()
    stale_dir = tmp_path / f".drive_overlay.mp4.partial-{dead}-ab12cd34"
    stale_file = tmp_path / f".labels.png.partial-{dead}-ef56gh78"  # a staging entry not a folder
    live = tmp_path / f".frame.png.partial-{live_pid}-ij90kl12"
    (stale_dir / "drive_overlay.mp4").parent.mkdir()
    (stale_dir / "drive_overlay.mp4").write_bytes(b"half")
    stale_file.write_bytes(b"half")
    (live / "frame.png").parent.mkdir()
    (live / "frame.png").write_bytes(b"being written")
    (tmp_path / ".user.partial-notes").write_text("not a staging name")
    assert atomic.remove_dead_staging(str(tmp_path)) == [str(stale_dir), str(stale_file)]
    assert _hidden(tmp_path) == [live.name, ".user.partial-notes"]
    assert (live / "frame.png").read_bytes() == b"being written"


def test_a_write_names_its_staging_with_its_pid_and_cleans_its_folder_first(tmp_path, live_pid):
    dead = _dead_pid()
    (tmp_path / f".a.png.partial-{dead}-ab12cd34").mkdir()
    (tmp_path / f".a.png.partial-{live_pid}-ab12cd34").mkdir()
    with atomic_output(tmp_path / "a.png") as tmp:
        staging = os.path.basename(os.path.dirname(tmp))
        assert staging.startswith(f".a.png.partial-{os.getpid()}-")
        assert _hidden(tmp_path) == sorted([staging, f".a.png.partial-{live_pid}-ab12cd34"])
        open(tmp, "w").write("x")
    assert _hidden(tmp_path) == [f".a.png.partial-{live_pid}-ab12cd34"]
    assert (tmp_path / "a.png").read_text() == "x"
