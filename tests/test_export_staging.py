"""A killed export's hidden staging folder is removed by the next export to the same folder."""

import os
import subprocess
import sys

from synergyseg.export.artifacts import remove_stale_staging


def test_only_the_staging_folders_of_dead_exports_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".export.export-{dead_pid}-abc123"
    live = tmp_path / f".export.export-{os.getpid()}-def456"
    other = tmp_path / f".other.export-{dead_pid}-x"  # another output folder's staging
    for folder in (stale, live, other):
        (folder / "saved_model").mkdir(parents=True)
    assert remove_stale_staging(tmp_path / "export") == [str(stale)]
    assert not stale.exists() and live.exists() and other.exists()
