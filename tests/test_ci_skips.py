"""tests/ci_skips.py: with SYNERGYSEG_NO_SKIPS=1 (as .ci/run sets it) a skipped test fails the run and
is named; without it, a skip stays a skip. Checked on a two-test file in a pytest subprocess."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TESTS = '''
import pytest

def test_runs():
    assert True

def test_needs_an_extra():
    pytest.importorskip("no_such_optional_package_xyz")
'''


def _pytest(tmp_path, **env):
    (tmp_path / "test_sample.py").write_text(TESTS)
    environ = {k: v for k, v in os.environ.items() if k != "SYNERGYSEG_NO_SKIPS"}
    environ.update(env, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.ci_skips",
                           str(tmp_path / "test_sample.py")], capture_output=True, text=True, cwd=tmp_path,
                          env=environ, timeout=120)


def test_a_skip_fails_the_run_under_ci_and_is_named(tmp_path):
    done = _pytest(tmp_path, SYNERGYSEG_NO_SKIPS="1")
    assert done.returncode == 1, done.stdout
    assert "1 passed, 1 skipped" in done.stdout
    assert "test_sample.py::test_needs_an_extra" in done.stdout and "no_such_optional_package_xyz" in done.stdout


def test_a_skip_stays_a_skip_for_users(tmp_path):
    done = _pytest(tmp_path)
    assert done.returncode == 0, done.stdout
    assert "1 passed, 1 skipped" in done.stdout
