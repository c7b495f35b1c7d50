"""Train SynergySeg (the paper's recipe on model.fit), evaluate it, and write a run folder.

    python train.py                                   # main job: synthetic set, ~5 min on 2 idle CPU cores
    python train.py --preset cityscapes --data-dir data/cityscapes --run-dir runs/cs
    python train.py --preset mapillary --mapillary-config data/mapillary/config.json
    python train.py --config runs/cs/config.json      # resume that run folder (also once moved)
    python train.py --config runs/cs/config.json --run-dir runs/cs2 --seed 1   # repeat it, changed
    python train.py --preset synthetic --epochs 2 --backbone resnet18 --aux-loss-weight 0.4

A killed run resumes from RUN/backup when started again with the same arguments.
"""

import argparse
import dataclasses
import json
import os
import sys

from synergyseg.quiet import quiet_tensorflow

quiet_tensorflow()  # first: drops TensorFlow's start-up lines (a no-op once `import synergyseg` ran it)

from synergyseg.training.config import AUX_LOSS_WEIGHT, PRESETS, RunConfig, parse_field, preset  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="named configuration (default: synthetic)")
    parser.add_argument("--config", help="a run's config.json to repeat or resume")
    parser.add_argument("--no-evaluation", action="store_true",
                        help="skip evaluate.py's tables and figures after training (RUN/evaluation)")
    defaults = PRESETS["synthetic"]
    notes = {"aux_loss_weight": f"{AUX_LOSS_WEIGHT} with a two-scale fusion, 0 with low or high; "
                                "0 is the paper's fused-only loss"}
    for field in dataclasses.fields(RunConfig):
        if field.name == "preset":
            continue
        flag = "--" + field.name.replace("_", "-")
        default = notes.get(field.name, getattr(defaults, field.name))
        parser.add_argument(flag, dest=field.name, default=None, metavar=field.name.upper(),
                            help=f"(default from the preset; synthetic: {default})")
    args = parser.parse_args(argv)
    overrides = {}
    for field in dataclasses.fields(RunConfig):
        text = getattr(args, field.name, None)
        if text is None or field.name == "preset":
            continue
        try:
            overrides[field.name] = parse_field(field.name, text)
        except ValueError as e:
            parser.error(f"--{field.name.replace('_', '-')}: {e}")
    if args.config and args.preset:
        parser.error("give --config or --preset, not both")
    try:
        if args.config:
            from synergyseg.run_folder import RunFolder

            run = RunFolder(os.path.dirname(args.config) or os.curdir)
            if "run_dir" not in overrides and run.holds_run():
                # A run folder's own config resumes that folder where it is now (it may have moved).
                overrides["run_dir"] = run.path
            config = RunConfig.from_json(args.config).replace(**overrides)
        else:
            config = preset(args.preset or "synthetic", **overrides)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    return config, args.no_evaluation


def main(argv=None):
    """Runs train.py; a refusal or a bad input is one `error:` line on stderr and exit status 2."""
    config, no_evaluation = parse_args(argv)
    if config.backbone_width < 16 and "TF_ENABLE_ONEDNN_OPTS" not in os.environ and argv is None:
        # TF 2.21's oneDNN filter gradient of a 1x1 stride-2 convolution with 8 input channels
        # crashes the process (docs/known-issues.md); TensorFlow's own kernel is fine. The flag
        # is read when TensorFlow loads, which the config import above did: start again with it.
        print("backbone_width < 16: restarting with TF_ENABLE_ONEDNN_OPTS=0 (docs/known-issues.md)",
              flush=True)
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
        os.execv(sys.executable, [sys.executable] + sys.argv)
    print(json.dumps(config.to_dict(), sort_keys=True))
    try:
        _train_and_evaluate(config, no_evaluation)
    except (ValueError, OSError, FloatingPointError) as e:
        # Each message names the file or field and the fix (another --run-dir, evaluate.py, ...).
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2
    return 0


def _train_and_evaluate(config, no_evaluation):
    # Imported here so --help answers without loading TensorFlow.
    from synergyseg.evaluation.evaluate_model import (
        EvaluationOptions, evaluate_model, evaluation_finished)
    from synergyseg.run_folder import RunFolder
    from synergyseg.training.run import train, training_finished

    evaluate = not no_evaluation
    if (evaluate and config.strategy != "multiworker" and training_finished(config)
            and not evaluation_finished(RunFolder(config.run_dir).evaluation)):
        # A kill during the evaluation below: the same command finishes it.
        print(f"{config.run_dir}: the training finished earlier; finishing its evaluation")
    else:
        result = train(config)
        print(json.dumps({"run_dir": config.run_dir, "steps": result["steps"],
                          "seconds": round(result["seconds"], 1), "metrics": result["metrics"]},
                         indent=2))
        # Only the chief of a multi-worker run has metrics, and evaluates.
        evaluate = evaluate and result["metrics"] is not None
    if evaluate:
        # The paper's Table I, the fusion ablation and the figures, into RUN/evaluation; speed is
        # evaluate.py's separate job.
        evaluate_model(EvaluationOptions(run_or_model=config.run_dir, speed=False, progress=False))


if __name__ == "__main__":
    sys.exit(main())
