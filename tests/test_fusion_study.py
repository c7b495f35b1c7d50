"""benchmarks/fusion_study.py end to end in a tiny setting: trains, scores, tabulates, resumes."""

import json
import os
import subprocess
import sys

from reference import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY = os.path.join(ROOT, "benchmarks", "fusion_study.py")


def _arguments(out):
    return ["--smoke", "--variants", "single,eq1", "--seeds", "0", "--out", str(out)]


def test_study_trains_each_variant_writes_the_table_and_skips_finished_runs(tmp_path, capsys):
    done = subprocess.run([sys.executable, STUDY, *_arguments(tmp_path)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    runs = {r["variant"]: r for r in results["runs"]}
    assert sorted(runs) == ["eq1", "single"]
    # Each variant trained with its own fusion (the config train.py saved says so) ...
    for variant, fusion in (("single", "high"), ("eq1", "uncertainty")):
        config = json.loads((tmp_path / "runs" / f"{variant}-seed0" / "config.json").read_text())
        assert config["fusion"] == fusion and config["seed"] == 0 and config["epochs"] == 1
    # ... and its record holds evaluate.py's numbers: the model's mIoU is the mean of its
    # per-class IoUs, and the ablation's eq. 1 column equals the eq. 1-trained model's score.
    for record in runs.values():
        ious = [v for v in record["iou"].values() if v is not None]
        assert abs(record["miou"] - sum(ious) / len(ious)) < 1e-6
        assert record["train_cpu_s"] > 0
    assert abs(runs["eq1"]["ablation"]["uncertainty"]["miou"] - runs["eq1"]["miou"]) < 1e-6
    table = (tmp_path / "table.md").read_text()
    assert "| single | 1 |" in table and "| eq1 | 1 |" in table and "traffic sign" in table
    assert sorted(os.listdir(tmp_path / "records")) == ["eq1-seed0.json", "single-seed0.json"]
    # A second run finds both runs finished: nothing is trained again. (Its main() in this
    # process: the command itself ran above, and a skip starts no process to watch.)
    model = tmp_path / "runs" / "eq1-seed0" / "final.keras"
    stamps = {path: path.stat().st_mtime_ns for path in (tmp_path / "runs").rglob("*")}
    capsys.readouterr()
    assert load_script(STUDY).main(_arguments(tmp_path)) == 0
    again = capsys.readouterr().out
    assert "| eq1 | 1 |" in again  # the table, from the records
    assert "training" not in again and model.stat().st_mtime_ns == stamps[model]
    assert {path: path.stat().st_mtime_ns for path in (tmp_path / "runs").rglob("*")} == stamps


def test_both_regimes_keep_the_budget_their_committed_records_were_trained_at():
    # The main job trains fewer epochs than the study (README); the study's records were trained
    # at 15 x 50 steps, so each regime pins its epochs instead of following the preset.
    from synergyseg.training.config import SYNTHETIC_STUDY_EPOCHS, preset

    study = load_script(STUDY)
    assert SYNTHETIC_STUDY_EPOCHS == 15 != preset("synthetic").epochs
    assert {name: overrides["epochs"] for name, overrides in study.REGIMES.items()} == {
        "synthetic": 15, "large": 15}
    # The large regime sees the synthetic regime's pixels per epoch: 4x the pixels per crop.
    synthetic, large = preset("synthetic"), study.REGIMES["large"]
    pixels = lambda batch, steps, crop: batch * steps * crop[0] * crop[1]  # noqa: E731
    assert synthetic.steps_per_epoch is None  # an epoch is one pass over the training scenes
    assert pixels(large["batch_size"], large["steps_per_epoch"], large["crop_size"]) == pixels(
        synthetic.batch_size, synthetic.synthetic_train // synthetic.batch_size, synthetic.crop_size)


def _record(variant, seed, miou):
    ious = {"pole": miou, "traffic sign": miou, "person": miou, "car": miou, "truck": miou, "building": miou}
    return {"variant": variant, "seed": seed, "miou": miou, "iou": ious, "train_wall_s": 60.0,
            "train_cpu_s": 60.0, "load_before": 0.1, "load_after": 1.0, "resumed": False,
            "ablation": {"uncertainty": {"miou": miou, "iou": ious}}}


def test_the_table_holds_every_record_and_the_paired_differences(tmp_path, capsys):
    # Runs finished by separate invocations (other variants or seeds, other processes) all count:
    # --summarize rebuilds the tables from OUT/records alone.
    records = tmp_path / "records"
    records.mkdir()
    mious = {("eq1", 0): 0.62, ("eq1", 1): 0.65, ("single", 0): 0.60, ("single", 1): 0.64,
             ("max", 1): 0.70}
    for (variant, seed), miou in mious.items():
        (records / f"{variant}-seed{seed}.json").write_text(json.dumps(_record(variant, seed, miou)))
    study = load_script(STUDY)
    assert study.main(["--regime", "large", "--summarize", "--out", str(tmp_path)]) == 0
    table = (tmp_path / "table.md").read_text()
    assert capsys.readouterr().out == table
    assert [r["variant"] for r in json.loads((tmp_path / "results.json").read_text())["runs"]] == [
        "eq1", "single", "eq1", "single", "max"]
    assert "| eq1 | 2 | 63.5 ± 2.1 |" in table and "| max | 1 | 70.0 |" in table
    assert "| single | 60.0 | 64.0 |" in table  # per seed
    # eq1 - single per seed: +2.0 and +1.0 -> mean 1.5, sample std 0.71; max only on seed 1.
    assert "| eq1 | +1.5 ± 0.7 (2) |  |" in table
    assert "| max | +6.0 (1) | +5.0 (1) |" in table
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()
