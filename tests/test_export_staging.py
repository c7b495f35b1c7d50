"""An export's output folder: killed exports' hidden staging folders are removed, and an export
into an earlier one leaves no artifact of it."""

import json
import os
import subprocess
import sys

import synergyseg
from synergyseg.export import export_model
from synergyseg.export.artifacts import remove_stale_staging


def test_only_the_staging_folders_of_dead_exports_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        stale = tmp_path / f".export.export-{dead_pid}-abc123"
        aside = tmp_path / f".export.export-{dead_pid}-abc123.old"  # killed while moving in
        live = tmp_path / f".export.export-{os.getpid()}-def456"
        # Other output folders' staging (a rerun with another --out): a dead export's goes too.
        other = tmp_path / f".other.export-{dead_pid}-x"
        other_live = tmp_path / f".other.export-{sleeper.pid}-y"
        for folder in (stale, aside, live, other, other_live):
            (folder / "saved_model").mkdir(parents=True)
        assert remove_stale_staging(tmp_path / "export") == sorted(
            [str(stale), str(aside), str(other)])
        assert sorted(os.listdir(tmp_path)) == sorted([live.name, other_live.name])
    finally:
        sleeper.kill()
        sleeper.wait()


def test_an_export_into_an_earlier_export_leaves_only_its_own_artifacts(tmp_path):
    out = tmp_path / "export"
    # An earlier export of every format, its TFLite files at another size, and a user's file.
    (out / "saved_model" / "variables").mkdir(parents=True)
    (out / "saved_model" / "saved_model.pb").write_bytes(b"old graph")
    for name in ("model_float32.tflite", "model_float16.tflite", "model_int8.tflite", "model.onnx"):
        (out / name).write_bytes(b"old model")
    (out / "metadata.json").write_text(json.dumps({"tflite_size": [64, 128]}))
    (out / "notes.txt").write_text("the user's")
    model = synergyseg.build_synergyseg(10, backbone="resnet18", backbone_width=8,
                                        head_filters=16, low_level_filters=8)
    written = export_model(model, out, formats=("saved_model",), log=None)
    assert sorted(os.listdir(out)) == ["metadata.json", "notes.txt", "saved_model"]
    assert written == {"saved_model": str(out / "saved_model"), "metadata": str(out / "metadata.json")}
    assert (out / "saved_model" / "saved_model.pb").read_bytes() != b"old graph"
    assert json.loads((out / "metadata.json").read_text())["tflite_size"] is None
    assert (out / "notes.txt").read_text() == "the user's"
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []  # nothing set aside stays
