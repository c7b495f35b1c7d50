"""benchmarks/realtime_choice.py: issue 18's rule, and the presets it picked from the committed tables."""

import json
import os

import pytest

from reference import load_script
from synergyseg.training.config import REALTIME_FAST_MODEL, REALTIME_MODEL, RunConfig, preset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHOICE = os.path.join(ROOT, "benchmarks", "realtime_choice.py")


def test_the_rule_picks_the_fastest_within_two_points_and_the_best_at_30_fps():
    script = load_script(CHOICE)
    mious = {"realtime-a": [71.0, 71.2, 71.1], "realtime-b": [69.5, 69.0, 70.0], "realtime-c": [65.0, 66.0, 64.0],
             "realtime-d": [60.0, 60.0, 60.0], "realtime-untimed": [71.5]}
    ms = {"realtime-a": 80.0, "realtime-b": 50.0, "realtime-c": 25.0, "realtime-d": 20.0}
    choice = script.choose(mious, ms)
    assert [r["option"] for r in choice["rows"]] == [
        "realtime-d", "realtime-c", "realtime-b", "realtime-a", "realtime-untimed"]
    # The best is over every trained option, timed or not; the means are over seeds.
    assert choice["best_miou"] == 71.5
    assert choice["realtime"] == "realtime-b"  # 69.5 >= 71.5 - 2, faster than a (71.1)
    assert choice["realtime_fast"] == "realtime-c"  # 40 FPS, 2x b's, more accurate than d (50 FPS)
    assert "| realtime-untimed | 1 | 71.5 | 71.5 | not timed | - | yes | - |" in script.markdown(choice)
    # An untimed option ahead of every timed one by more than 2 points: `realtime` waits for its time.
    ahead = script.choose({**mious, "realtime-untimed": [80.0]}, ms)
    assert ahead["realtime"] is None and ahead["realtime_fast"] == "realtime-c"
    slow = script.choose({"realtime-a": [70.0] * 3}, {"realtime-a": 40.0})
    assert slow["realtime"] == "realtime-a" and slow["realtime_fast"] is None
    # One or two seeds: counted in the best mIoU, not picked (a seed moves an option > 2 points).
    few = script.choose({**mious, "realtime-e": [70.0, 70.5]}, {**ms, "realtime-e": 10.0})
    assert few["realtime"] == "realtime-b" and few["realtime_fast"] == "realtime-c"
    # Timed but not trained: listed, not in the best mIoU, never picked however fast.
    untrained = script.choose(mious, {**ms, "realtime-new": 5.0})
    assert untrained["rows"][0]["option"] == "realtime-new" and untrained["rows"][0]["miou"] is None
    assert (untrained["best_miou"], untrained["realtime"], untrained["realtime_fast"]) == (71.5, "realtime-b", "realtime-c")
    assert "| realtime-new | 0 | not trained | - | 5.0 | 200.0 | - | yes |" in script.markdown(untrained)
    # Within 15 % of the fastest time is a tie, won by the more accurate option; beyond it, speed.
    tie = {"realtime-a": [70.0] * 3, "realtime-b": [71.0] * 3}
    assert script.choose(tie, {"realtime-a": 70.0, "realtime-b": 80.0})["realtime"] == "realtime-b"
    assert script.choose(tie, {"realtime-a": 70.0, "realtime-b": 81.0})["realtime"] == "realtime-a"
    # 33.34 ms is 29.99 FPS: short of 30 even though its FPS column rounds to 30.0.
    edge = script.choose({"realtime-a": [72.0] * 3, "realtime-b": [70.0] * 3},
                         {"realtime-a": 80.0, "realtime-b": 33.34})
    assert edge["rows"][0]["fps"] == 30.0 and edge["realtime_fast"] is None
    # `realtime` itself at 30 FPS or more (a faster CPU): `realtime-fast` is still another option,
    # the most accurate at twice its frame rate (not `realtime`, nor a at 33 FPS, 1.5x b's).
    quick = script.choose(mious, {"realtime-a": 30.0, "realtime-b": 20.0, "realtime-c": 9.0, "realtime-d": 8.0})
    assert (quick["realtime"], quick["realtime_fast"]) == ("realtime-b", "realtime-c")
    assert script.choose(mious, {"realtime-a": 30.0, "realtime-b": 20.0, "realtime-c": 10.5,
                                 "realtime-d": 8.0})["realtime_fast"] == "realtime-d"  # c: 1.9x


def test_rows_of_one_run_in_several_files_count_once(tmp_path):
    script = load_script(CHOICE)
    row = lambda seed, miou: {"option": "realtime-x", "fuse_at": "decoder", "seed": seed, "final_mean_iou": miou}
    (tmp_path / "a.json").write_text(json.dumps({"rows": [row(0, 0.60), row(1, 0.62)]}))
    # An older file without seeds: the preset's seed, the same run as seed 0 above.
    old = {k: v for k, v in row(0, 0.60).items() if k != "seed"}
    (tmp_path / "b.json").write_text(json.dumps({"rows": [old, {**row(2, 0.64), "fuse_at": "input"}]}))
    assert script.accuracy([tmp_path / "a.json", tmp_path / "b.json", tmp_path / "missing.json"]) == {
        "realtime-x": pytest.approx([60.0, 62.0])}
    assert script.PRESET_SEED == RunConfig().seed


def test_the_presets_are_the_rules_choice_of_the_committed_tables():
    choice = load_script(CHOICE).committed_choice()
    for model, option in ((REALTIME_MODEL, choice["realtime"]), (REALTIME_FAST_MODEL, choice["realtime_fast"])):
        assert option is not None
        assert {k: getattr(preset(option), k) for k in model} == model, option
