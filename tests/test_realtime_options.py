"""benchmarks/realtime_options.py resumes a sweep: which run folders it trains again, which it skips."""

import json
import os

from reference import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "realtime_options.py")
OPTIONS = ["realtime-lraspp-small32", "realtime-lraspp-large32", "realtime-lraspp-small-minimal"]


def test_a_run_killed_during_its_evaluation_is_handed_back_to_train_py(tmp_path, monkeypatch):
    script = load_script(SCRIPT)
    runs = tmp_path / "runs"
    evaluated, trained_only, empty = (runs / name for name in OPTIONS)
    for folder in (evaluated, trained_only):  # both finished training (metrics.json) ...
        (folder / "evaluation").mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"mean_iou": 0.5}))
    (evaluated / "evaluation" / "results.json").write_text("{}")  # ... one was also evaluated
    empty.mkdir()
    trained = []
    monkeypatch.setattr(script, "train", lambda name, folder, *rest: trained.append(folder) or 1.0)
    monkeypatch.setattr(script, "collect", lambda name, folder: {"option": name})
    monkeypatch.setattr(script, "summary", lambda rows: {})
    monkeypatch.setattr(script, "markdown", lambda rows: "")
    script.main(["--options", ",".join(OPTIONS), "--runs", str(runs), "--out", str(tmp_path / "table")])
    # train.py finishes the evaluation of a finished training, and resumes or starts the rest.
    assert trained == [str(trained_only), str(empty)]
    assert json.loads((tmp_path / "table.json").read_text())["rows"] == [{"option": o} for o in OPTIONS]
