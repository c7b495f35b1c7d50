"""benchmarks/realtime_speed.py's plumbing: --smoke writes the table's JSON and its ratios are the ms ratios.

No speed is checked: the smoke run's times are whatever the machine gives; only the bookkeeping is.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "realtime_speed.py")


def _script():
    spec = importlib.util.spec_from_file_location("realtime_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_refuses_to_time_on_a_loaded_machine(monkeypatch, capsys):
    script = _script()
    monkeypatch.setattr(script.os, "getloadavg", lambda: (script.MAX_LOAD, 0.0, 0.0))
    assert script.main(["--smoke"]) == 2
    assert "load average 0.50 >= 0.5" in capsys.readouterr().err


def test_smoke_run_writes_entries_and_ratios_of_its_own_times(tmp_path):
    pytest.importorskip("keras_hub")  # the `bench` extra
    out = tmp_path / "realtime_speed"
    # One TFLite path keeps the run short; int8 goes through the same code with a calibration set.
    subprocess.run([sys.executable, SCRIPT, "--smoke", "--force", "--paths", "tflite-fp32,keras",
                    "--out", str(out)], cwd=ROOT, check=True, capture_output=True, timeout=600)
    result = json.loads((tmp_path / "realtime_speed.json").read_text())
    assert {"command", "date", "cpu", "versions", "load", "others_cpu_share", "settings", "entries",
            "ratios"} <= set(result)
    assert set(result["load"]) == {"start", "before_timing", "end"}
    assert "load average" in result["load"]["start"]["uptime"]
    entries = {(e["model"], e["variant"], e["path"]): e for e in result["entries"]}
    model = "realtime-lraspp-large-cut16"
    assert set(entries) == {(m, v, p) for p in ("tflite-fp32", "keras") for m, v in [
        (model, "two-scale (decoder)"), (model, "single-scale (decoder)"), (model, "two-scale (input)"),
        ("segformer-b0", "2 windows 64x64")]}
    for e in entries.values():
        assert e["size"] == "64x128" and len(e["times_ms"]) == 1 and e["ms"] > 0
        assert e["fps"] == pytest.approx(1000 / e["ms"], rel=1e-3)
        assert e["gflops_tf_profiler"] > 0
        if e["path"] == "tflite-fp32":
            assert "ARG_MAX" in e["undelegated_ops"] and 0 <= e["agreement_pct"] <= 100
    assert entries[(model, "two-scale (decoder)", "keras")]["gflops"] > entries[(model, "single-scale (decoder)", "keras")]["gflops"]
    two_over_single = result["ratios"]["two_over_single"]
    assert len(two_over_single) == 4  # two fusion resolutions x two paths
    for r in two_over_single:
        two = entries[(r["model"], f"two-scale ({r['fuse_at']})", r["path"])]["ms"]
        single = entries[(r["model"], "single-scale (decoder)", r["path"])]["ms"]
        assert (r["two_scale_ms"], r["single_scale_ms"]) == (two, single)
        assert r["ratio"] == pytest.approx(two / single)
    vs_segformer = result["ratios"]["vs_segformer"]
    assert len(vs_segformer) == 6
    for r in vs_segformer:
        ours = entries[(r["model"], r["variant"], r["path"])]["ms"]
        theirs = entries[("segformer-b0", "2 windows 64x64", r["path"])]["ms"]
        assert r["ratio"] == pytest.approx(theirs / ours, rel=1e-3)
    assert "| model | variant | size | path |" in (tmp_path / "realtime_speed.md").read_text()
