"""benchmarks/realtime_speed.py's plumbing: --smoke writes the table's JSON and its ratios are the ms ratios
(paired at the same class map stride); its agreement is against the exact (stride 1) Keras class map.

No speed is checked: the smoke run's times are whatever the machine gives; only the bookkeeping is.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from reference import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "realtime_speed.py")


def test_refuses_to_time_on_a_loaded_machine(monkeypatch, capsys):
    script = load_script(SCRIPT)
    monkeypatch.setattr(script.os, "getloadavg", lambda: (script.MAX_LOAD, 0.0, 0.0))
    assert script.main(["--smoke"]) == 2
    assert "load average 0.50 >= 0.5" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["0,4", "1,1", "4,x", ""])
def test_refuses_bad_class_map_strides(text, capsys):
    with pytest.raises(SystemExit) as raised:
        load_script(SCRIPT).parse_args(["--smoke", "--class-map-strides", text])
    assert raised.value.code == 2
    assert f"--class-map-strides must be distinct positive integers separated by commas, got {text!r}" in \
        capsys.readouterr().err


def test_each_round_times_every_entry_over_its_back_to_back_calls(monkeypatch):
    script = load_script(SCRIPT)
    clock, calls = [0.0], {"a": 0, "b": 0}

    def runner(name, ms):
        def run(frame):
            calls[name] += 1
            clock[0] += ms / 1000  # each call of this entry takes `ms` on the fake clock
            return frame
        return lambda: run

    monkeypatch.setattr(script.time, "perf_counter", lambda: clock[0])
    entries = [{"runner": runner("a", 4.0)}, {"runner": runner("b", 10.0)}]
    script.time_round_robin(entries, np.zeros(1), warmup=2, rounds=3, calls=5)
    assert calls == {"a": 2 + 3 * 5, "b": 2 + 3 * 5}
    assert entries[0]["times_ms"] == pytest.approx([4.0] * 3) and entries[1]["ms"] == pytest.approx(10.0)


def test_paired_ratio_is_the_median_of_the_per_round_quotients():
    script = load_script(SCRIPT)
    # quotients 1.25, 3.0, 1.2: their median is 1.25; the medians' quotient would be 12 / 10 = 1.2
    assert script.paired_ratio([10.0, 30.0, 12.0], [8.0, 10.0, 10.0]) == pytest.approx(1.25)
    assert script.paired_ratio([10.0], [8.0, 9.0]) is None  # not timed in the same rounds


def test_no_input_fusion_times_two_and_single_scale_only():
    import synergyseg

    script = load_script(SCRIPT)
    model = synergyseg.build_synergyseg(3, backbone="mobilenetv3_small_minimal_cut16", head="lraspp",
                                        output_stride=16, fuse_at="decoder")
    names = lambda rows: [(label, name, m.fuse_at, m.fusion_name, strides) for label, name, m, strides in rows]  # noqa: E731
    both = [("m", "two-scale (decoder)", "decoder", "uncertainty", (1, 4)),
            ("m", "single-scale (decoder)", "decoder", "high", (1, 4))]
    assert names(script.variants("m", model, (1, 4), input_fusion=False)) == both
    assert names(script.variants("m", model, (1, 4))) == both + [
        ("m", "two-scale (input)", "input", "uncertainty", (1,))]
    assert script.parse_args(["--no-input-fusion"]).input_fusion is False


@pytest.mark.parametrize("flag", ["--calls", "--rounds"])
def test_refuses_fewer_than_one_call_or_round(flag, capsys):
    with pytest.raises(SystemExit) as raised:
        load_script(SCRIPT).parse_args([flag, "0"])
    assert raised.value.code == 2 and "must be at least 1" in capsys.readouterr().err


def test_smoke_run_writes_entries_and_ratios_of_its_own_times(tmp_path):
    pytest.importorskip("keras_hub")  # the `bench` extra
    out = tmp_path / "realtime_speed"
    # One TFLite path keeps the run short; int8 goes through the same code with a calibration set.
    # --before-timing runs its command once the conversions are done (here it leaves a file).
    subprocess.run([sys.executable, SCRIPT, "--smoke", "--force", "--paths", "tflite-fp32,keras",
                    "--before-timing", f"echo converted > {tmp_path / 'hook'}",
                    "--out", str(out)], cwd=ROOT, check=True, capture_output=True, timeout=600,
                   env=dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])))
    assert (tmp_path / "hook").read_text() == "converted\n"
    result = json.loads((tmp_path / "realtime_speed.json").read_text())
    assert {"command", "date", "cpu", "versions", "load", "others_cpu_share", "settings", "entries",
            "ratios"} <= set(result)
    assert set(result["load"]) == {"start", "before_timing", "end"}
    assert "load average" in result["load"]["start"]["uptime"]
    assert result["settings"]["class_map_strides"] == [1, 4]  # the default
    entries = {(e["model"], e["variant"], e["class_map_stride"], e["path"]): e for e in result["entries"]}
    model = "realtime-fast"  # the smoke run's preset: the lightest, so the plumbing check stays short
    # Fused at the decoder: each class map stride; fused at the input and SegFormer: stride 1 only.
    assert set(entries) == {(m, v, stride, p) for p in ("tflite-fp32", "keras") for m, v, stride in [
        (model, "two-scale (decoder)", 1), (model, "two-scale (decoder)", 4),
        (model, "single-scale (decoder)", 1), (model, "single-scale (decoder)", 4),
        (model, "two-scale (input)", 1), ("segformer-b0", "2 windows 64x64", 1)]}
    for (m, v, stride, path), e in entries.items():
        assert e["size"] == "64x128" and len(e["times_ms"]) == 1 and e["ms"] > 0
        assert e["fps"] == pytest.approx(1000 / e["ms"], rel=1e-3)
        assert e["gflops_tf_profiler"] > 0
        if path == "tflite-fp32":
            assert "ARG_MAX" in e["undelegated_ops"]
        if path == "keras" and stride == 1:  # the reference of every agreement
            assert e["agreement_pct"] is None
        else:
            assert 0 <= e["agreement_pct"] <= 100
    for variant in ("two-scale (decoder)", "single-scale (decoder)"):
        # float32 TFLite at stride 4 against the exact map changes what Keras at stride 4 changes
        # (not ~100%, as it would against the stride 4 Keras map)
        keras4, tflite4 = (entries[(model, variant, 4, p)]["agreement_pct"] for p in ("keras", "tflite-fp32"))
        assert keras4 < 99  # precondition: the seeded scenes' class maps have boundaries (84% measured)
        assert tflite4 == pytest.approx(keras4, abs=1.0)
    assert entries[(model, "two-scale (decoder)", 1, "keras")]["gflops"] > entries[(model, "single-scale (decoder)", 1, "keras")]["gflops"]
    two_over_single = result["ratios"]["two_over_single"]
    # (decoder at strides 1 and 4, input at stride 1) x two paths, each paired at its own stride
    assert sorted((r["fuse_at"], r["class_map_stride"], r["path"]) for r in two_over_single) == sorted(
        (f, stride, p) for p in ("tflite-fp32", "keras") for f, stride in [("decoder", 1), ("decoder", 4), ("input", 1)])
    for r in two_over_single:
        two = entries[(r["model"], f"two-scale ({r['fuse_at']})", r["class_map_stride"], r["path"])]["ms"]
        single = entries[(r["model"], "single-scale (decoder)", r["class_map_stride"], r["path"])]["ms"]
        assert (r["two_scale_ms"], r["single_scale_ms"]) == (two, single)
        assert r["ratio"] == pytest.approx(two / single)
        assert r["paired_ratio"] == pytest.approx(two / single)  # one round: the same quotient
    vs_segformer = result["ratios"]["vs_segformer"]
    assert len(vs_segformer) == 10  # every entry of ours
    for r in vs_segformer:
        ours = entries[(r["model"], r["variant"], r["class_map_stride"], r["path"])]["ms"]
        theirs = entries[("segformer-b0", "2 windows 64x64", 1, r["path"])]["ms"]
        assert r["ratio"] == pytest.approx(theirs / ours, rel=1e-3)
    assert "| model | variant | class map stride | size | path |" in (tmp_path / "realtime_speed.md").read_text()
