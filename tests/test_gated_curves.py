"""benchmarks/gated_curves.py: the curves read from two passes are what the gated model scores.

The script composes any choice of tiles from the fraction-0 and fraction-1 maps; the reference is
GatedSynergySeg itself at that fraction, scored by the evaluator on the same images.
"""

import json
import os

import numpy as np
import pytest

from reference import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "gated_curves.py")


def test_tile_confusions_count_each_pixel_once_in_its_tile():
    script = load_script(SCRIPT)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (7, 11))
    labels[0, 0] = 255  # ignored
    predicted = rng.integers(0, 3, (7, 11))
    tiles = script.tile_confusions(labels, predicted, 4, 3)
    assert tiles.shape == (2 * 3, 3, 3)
    # Tile (1, 2) is the cut corner rows 4-6, columns 8-10.
    corner = np.zeros((3, 3), np.int64)
    for y, p in zip(labels[4:, 8:].ravel(), predicted[4:, 8:].ravel()):
        corner[y, p] += 1
    np.testing.assert_array_equal(tiles[5], corner)
    assert tiles.sum() == labels.size - 1


def test_other_tile_scores_are_the_statistics_of_each_tile():
    script = load_script(SCRIPT)
    u = np.arange(7 * 11, dtype=np.float64).reshape(7, 11) / 100
    stats = script.tile_statistics(u, 4, ["mean", "max", "p90"])
    # Tile (1, 2) is the cut corner rows 4-6, columns 8-10: 9 values.
    corner = u[4:, 8:].ravel()
    assert stats["max"][5] == corner.max() == u[6, 10]
    assert stats["p90"][5] == pytest.approx(np.sort(corner)[7] + 0.2 * (np.sort(corner)[8] - np.sort(corner)[7]))
    assert stats["mean"][5] == pytest.approx(corner.sum() / 9)
    assert all(len(v) == 6 for v in stats.values())


def test_gate_curve_equals_the_gated_model_scored_by_the_evaluator(synthetic_run, tmp_path):
    from synergyseg.evaluation import MODEL_KEY, Predictor, evaluate_batches, validation_batches
    from synergyseg.models.gated import gated_synergyseg
    from synergyseg.run_folder import load_model, resolve_model_path

    out = tmp_path / "curves"
    data = str(synthetic_run.data_dir / "val-*.tfrecord")
    # 48x96 scenes in 16-px tiles: 18 tiles, so fraction 0.25 takes 5 (4.5 rounded half up).
    assert load_script(SCRIPT).main(["--model", str(synthetic_run.run_dir), "--data", data, "--tile-sizes", "16",
                           "--margins", "8", "--fractions", "0.25", "1", "--draws", "3",
                           "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    setting = result["settings"][0]
    assert setting["tiles_per_image"] == 18
    quarter, every = setting["curve"]
    assert quarter["tiles_per_image"] == 5 and every["tiles_per_image"] == 18

    model = load_model(resolve_model_path(synthetic_run.run_dir))  # the script's model
    batches = list(validation_batches(data, 1))

    def scored(m):
        return evaluate_batches(Predictor(m), batches, model.num_classes, progress=False)[MODEL_KEY].scores().mean_iou

    for fraction, expected in ((0.0, setting["low"]), (0.25, quarter["gate"]), (1.0, setting["every_tile"])):
        gated = gated_synergyseg(model, 16, 8, fraction=fraction)
        assert expected == pytest.approx(scored(gated), abs=1e-9), fraction
    # At fraction 1 every choice is every tile.
    assert every["gate"] == every["oracle"] == every["random_mean"] == pytest.approx(setting["every_tile"])
    assert set(every["other_scores"]) == {"mean", "max", "p90"}
    assert all(v == pytest.approx(setting["every_tile"]) for v in every["other_scores"].values())
    assert result["two_scale"] == pytest.approx(scored(model), abs=1e-9)
    assert "| 0.25 | 5.0 |" in out.with_suffix(".md").read_text()


def test_refuses_a_fusion_that_is_not_pixelwise(tmp_path):
    import synergyseg

    path = tmp_path / "attention.keras"
    synergyseg.build_synergyseg(3, backbone="resnet18", backbone_width=8, fusion="attention").save(path)
    with pytest.raises(SystemExit) as raised:
        load_script(SCRIPT).main(["--model", str(path), "--data", str(tmp_path / "none-*.tfrecord")])
    assert "fusion 'attention' is not pixelwise" in str(raised.value)


def test_data_that_matches_no_file_is_named_with_a_clean_exit(synthetic_run, tmp_path):
    with pytest.raises(SystemExit) as raised:
        load_script(SCRIPT).main(["--model", str(synthetic_run.run_dir), "--data", str(tmp_path / "none-*.tfrecord"),
                                  "--out", str(tmp_path / "curves")])
    assert "--data:" in str(raised.value) and "none-*.tfrecord" in str(raised.value)
    assert not list(tmp_path.glob("curves*"))  # nothing written


def test_gated_speed_times_a_preset_as_train_py_builds_it():
    """benchmarks/gated_speed.py part 2 on the real-time preset: the served model (decoder-fused,
    19 classes) beside its gated form; conv FLOPs follow the pixels (the half-size pass costs a
    quarter of the full one), whatever the code that times them."""
    import argparse

    script = load_script(os.path.join(ROOT, "benchmarks", "gated_speed.py"))
    built, build = [], script.timing_model
    script.timing_model = lambda name: built.append(build(name)) or built[-1]  # the model it times
    args = argparse.Namespace(tile_size=32, margin=8, timing_fractions=[0.0, 1.0], timing_repeats=1)
    result = script.timing_only(args, "realtime-cityscapes", 64, 128)
    [model] = built
    assert model.num_classes == 19 and model.fuse_at == "decoder" and model.head == "lraspp"
    rows = {r["model"]: r for r in result["rows"]}
    assert list(rows) == ["single-scale", "two-scale", "two-scale rewritten", "gated 0", "gated 1"]
    assert rows["single-scale"]["flops_vs_two_scale"] == pytest.approx(1 / 1.25, abs=0.03)
    assert rows["gated 0"]["flops_vs_two_scale"] == pytest.approx(0.25 / 1.25, abs=0.03)
    assert rows["gated 1"]["flops"] > rows["two-scale"]["flops"]  # every tile plus its margins
    assert all(r["latency_ms"] > 0 and r["cpu_ms"] > 0 for r in rows.values())
