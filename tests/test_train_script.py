"""train.py's command line: flags into a RunConfig, --config or --preset, and the evaluation after training."""

import importlib
import json

import pytest

import train
from synergyseg import data
from synergyseg.training.config import RunConfig, preset

# Op by op (--run-eagerly): 2 steps do not pay for tracing the training graph; what is checked
# here (the command line, the evaluation after training, the refusals) is the same either way.
TINY_FLAGS = ["--backbone", "resnet18", "--backbone-width", "8", "--head-filters", "16",
              "--low-level-filters", "8", "--crop-size", "64x128", "--batch-size", "4",
              "--steps-per-epoch", "2", "--tensorboard-images", "0", "--epochs", "1",
              "--run-eagerly", "true"]


def test_flags_override_the_preset_field_by_field():
    config, no_evaluation = train.parse_args(
        ["--preset", "cityscapes", "--epochs", "3", "--crop-size", "256x512", "--clipnorm", "1.0",
         "--mixed-precision", "true", "--aux-loss-weight", "0.4", "--no-evaluation"])
    assert no_evaluation
    expected = preset("cityscapes")
    assert config == expected.replace(epochs=3, crop_size=(256, 512), clipnorm=1.0,
                                      mixed_precision=True, aux_loss_weight=0.4)
    assert (config.epochs, config.crop_size, config.clipnorm) != (expected.epochs, expected.crop_size,
                                                                  expected.clipnorm)
    # No flags: the synthetic preset (the main job), evaluation on.
    assert train.parse_args([]) == (preset("synthetic"), False)


def test_help_gives_the_synthetic_presets_defaults(capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    # argparse wraps lines (also after a hyphen): compared without whitespace.
    text = "".join(capsys.readouterr().out.split())
    wanted = lambda line: "".join(line.split())
    # The preset's own values (width 16, 8 epochs), not RunConfig's bare ones (64, 10).
    assert wanted("--backbone-width BACKBONE_WIDTH (default from the preset; synthetic: 16)") in text
    assert wanted("--epochs EPOCHS (default from the preset; synthetic: 8)") in text
    assert wanted("--aux-loss-weight AUX_LOSS_WEIGHT (default from the preset; synthetic: 0.4 with a "
                  "two-scale fusion, 0 with low or high; 0 is the paper's fused-only loss)") in text


def test_config_of_a_moved_run_folder_resumes_it_where_it_is_now(tmp_path):
    run = tmp_path / "moved"
    run.mkdir()
    preset("synthetic", epochs=3, run_dir=str(tmp_path / "before")).to_json(run / "config.json")
    (run / "backup").mkdir()  # a run that trained here, then was moved
    config, _ = train.parse_args(["--config", str(run / "config.json")])
    assert config.run_dir == str(run) and config.epochs == 3
    config, _ = train.parse_args(["--config", str(run / "config.json"), "--run-dir", "elsewhere"])
    assert config.run_dir == "elsewhere"


def test_config_repeats_a_run_with_overrides_and_refuses_a_preset_beside_it(tmp_path, capsys):
    saved = preset("cityscapes", epochs=7, run_dir=str(tmp_path / "run"))
    saved.to_json(tmp_path / "config.json")
    config, _ = train.parse_args(["--config", str(tmp_path / "config.json"), "--epochs", "9"])
    assert config == saved.replace(epochs=9)
    assert RunConfig.from_json(tmp_path / "config.json").epochs == 7  # the file is not rewritten
    for argv, message in [
        (["--config", str(tmp_path / "config.json"), "--preset", "synthetic"],
         "give --config or --preset, not both"),
        (["--epochs", "many"], "--epochs: "),
        (["--preset", "imagenet"], "invalid choice: 'imagenet'"),
        (["--config", str(tmp_path / "missing.json")], "missing.json"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            train.parse_args(argv)
        assert exit_info.value.code == 2, argv
        assert message in capsys.readouterr().err, argv


class _Killed(BaseException):
    pass


def test_main_trains_then_evaluates_the_run_folder(tmp_path, capsys, monkeypatch):
    data.synthetic.generate(str(tmp_path / "data"), num_train=8, num_val=4, height=64, width=128,
                            seed=0, num_shards=1, workers=1, log=None)
    run = tmp_path / "run"
    argv = ["--data-dir", str(tmp_path / "data"), "--run-dir", str(run), *TINY_FLAGS]
    # Killed during the evaluation after training, as results.json (written last) is written.
    evaluation = importlib.import_module("synergyseg.evaluation.evaluate_model")
    with monkeypatch.context() as patch:
        patch.setattr(evaluation, "write_json", lambda *a, **k: (_ for _ in ()).throw(_Killed()))
        with pytest.raises(_Killed):
            train.main(argv)
    assert (run / "evaluation" / "report.md").is_file()
    assert not (run / "evaluation" / "results.json").exists()
    trained = (run / "final.keras").stat().st_mtime_ns
    capsys.readouterr()
    # The same command finishes the evaluation, without training again.
    assert train.main(argv) == 0
    printed = capsys.readouterr().out
    assert "the training finished earlier; finishing its evaluation" in printed
    assert (run / "final.keras").stat().st_mtime_ns == trained
    metrics = json.loads((run / "metrics.json").read_text())
    evaluation = json.loads((run / "evaluation" / "results.json").read_text())
    # evaluate.py's pass over best.keras (one epoch: the final model) finds metrics.json's mIoU.
    assert evaluation["images"] == 4 and "speed" not in evaluation
    assert evaluation["accuracy"]["mean_iou"] == pytest.approx(metrics["mean_iou"], abs=1e-6)
    assert (run / "evaluation" / "report.md").is_file()
    assert RunConfig.from_json(run / "config.json").epochs == 1
    saved = RunConfig.from_json(run / "config.json").to_dict()
    assert json.loads(printed[:printed.index("\n")]) == json.loads(json.dumps(saved))
    # Refusals are one error line with the fix, exit status 2. Once evaluated, the run is
    # finished: the same command is refused, pointing at evaluate.py.
    assert train.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "finished run (final.keras, metrics.json); pass another --run-dir" in err
    assert f"python evaluate.py {run}" in err
    assert train.main(argv + ["--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "another configuration" in err and "epochs: 1 there, 2 now" in err
    (tmp_path / "a_file").write_text("not a folder")
    assert train.main(argv[:2] + ["--run-dir", str(tmp_path / "a_file" / "run")] + argv[4:]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "a_file" in err, err
