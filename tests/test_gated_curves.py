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
