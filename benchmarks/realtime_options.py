"""Train every real-time head x trunk option on the fusion study's budget (15 x 50 steps); tabulate mIoU and the fusion ablation.

    python benchmarks/realtime_options.py             # every option (the presets are two of them), resumable
    python benchmarks/realtime_options.py --options realtime-lraspp-large-cut16,realtime-deeplab-large16
    python benchmarks/realtime_options.py --fuse-at input   # train with eq. 1 at the input size instead
    python benchmarks/realtime_options.py --options realtime-lraspp-large-cut16 --seeds 0 1 2
    python benchmarks/realtime_options.py --smoke     # 2 options x 2 steps on a tiny set: the plumbing only

Each option is `python train.py --preset NAME` (the synthetic preset's data, recipe and seed at the
fusion study's budget, 15 x 50 steps of 8 crops, about 5-6 min each on 2 idle cores) into its own
run folder, RUNS/NAME (RUNS/NAME-fuse-input with --fuse-at input, RUNS/NAME-seedN for a seed other
than the preset's, passed to train.py as --seed N). A run folder that holds
metrics.json is finished and skipped; a killed run resumes from its backup (train.py). Collected
from each folder: validation mIoU of final.keras (metrics.json) and train.py's evaluation of
the served model (RUN/evaluation/results.json: its mIoU, the fusion ablation on the same weights,
per-class IoU) and the auxiliary loss weight it trained with (the options 0, the presets and the
main job 0.4), written to benchmarks/results/realtime_options.json and a markdown table beside it:
one row per run, and per option with several seeds the mean +- standard deviation over them.
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from synergyseg.atomic import write_json, write_text  # noqa: E402
from synergyseg.evaluation.evaluate_model import evaluation_finished  # noqa: E402
from synergyseg.run_folder import RunFolder  # noqa: E402
from synergyseg.training.config import REALTIME_OPTIONS, preset  # noqa: E402

# Every option by default: `realtime` and `realtime-fast` are two of them (realtime_choice.py picks
# them), so training the presets too would train those models twice. The presets and the main job
# ("synthetic") may still be named with --options.
DEFAULT_OPTIONS = REALTIME_OPTIONS
ALSO_ACCEPTED = ("realtime", "realtime-fast", "synthetic")
RESULTS = os.path.join(ROOT, "benchmarks", "results", "realtime_options")
# Classes the issue watches (the first non-zero IoU on them came from LR-ASPP).
WATCHED_CLASSES = ("person", "traffic sign")
# --smoke: a few steps on a tiny synthetic set, so the whole loop runs in minutes.
SMOKE_OVERRIDES = ("--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2",
                   "--synthetic-train", "8", "--synthetic-val", "2", "--crop-size", "64x128",
                   "--synthetic-size", "64x128")


def run_dir(runs, name, fuse_at, seed=None):
    """The option's run folder (a fuse_at or seed other than the preset's gets its own)."""
    suffix = f"-fuse-{fuse_at}" if fuse_at and fuse_at != preset(name).fuse_at else ""
    if seed is not None and seed != preset(name).seed:
        suffix += f"-seed{seed}"
    return os.path.join(runs, name + suffix)


def train(name, folder, fuse_at, seed, extra, log):
    command = [sys.executable, os.path.join(ROOT, "train.py"), "--preset", name, "--run-dir", folder, *extra]
    if fuse_at:
        command += ["--fuse-at", fuse_at]
    if seed is not None:
        command += ["--seed", str(seed)]
    log(f"$ {' '.join(command)}")
    start = time.time()
    subprocess.run(command, check=True, cwd=ROOT)
    return time.time() - start


def collect(name, folder):
    """One row: the run's config, final.keras's mIoU and the evaluation's ablation."""
    run = RunFolder(folder)
    config = run.config()
    with open(run.metrics) as f:
        metrics = json.load(f)
    row = {"option": name, "seed": config.seed, "run_dir": folder, "head": config.head, "backbone": config.backbone,
           "output_stride": config.output_stride, "fuse_at": config.fuse_at,
           "aux_loss_weight": config.aux_weight, "final_mean_iou": metrics["mean_iou"]}
    results = os.path.join(run.evaluation, "results.json")
    if os.path.isfile(results):
        with open(results) as f:
            evaluation = json.load(f)
        row["evaluated_model"] = evaluation["model"]
        row["evaluated_mean_iou"] = evaluation["accuracy"]["mean_iou"]
        row["ablation"] = {fusion: scores["mean_iou"] for fusion, scores in evaluation["ablation"].items()}
        per_class = evaluation["accuracy"]["per_class_iou"]
        row["watched_iou"] = {c: per_class.get(c) for c in WATCHED_CLASSES}
    return row


def percent(value):
    return "-" if value is None else f"{100 * value:.1f}"


def mean_and_std(fractions):
    """(mean, sample standard deviation) in % of the values that are not None, None for fewer than two."""
    values = [100 * v for v in fractions if v is not None]
    if len(values) < 2:
        return None
    return round(float(np.mean(values)), 2), round(float(np.std(values, ddof=1)), 2)


def _aux(row):
    """The row's auxiliary loss weight (rows written before it was recorded trained with 0)."""
    return row.get("aux_loss_weight", 0.0)


def summary(rows):
    """Per option and fusion resolution with more than one seed: mean and (sample) standard
    deviation of final.keras's mIoU and of the watched classes' IoU, in %."""
    groups = {}
    for row in rows:
        groups.setdefault((row["option"], row["fuse_at"], _aux(row)), []).append(row)
    out = []
    for (option, fuse_at, aux), group in groups.items():
        if len(group) < 2:
            continue
        out.append({"option": option, "fuse_at": fuse_at, "aux_loss_weight": aux,
                    "seeds": sorted(r["seed"] for r in group),
                    "final_mean_iou": mean_and_std([r["final_mean_iou"] for r in group]),
                    **{c: mean_and_std([r.get("watched_iou", {}).get(c) for r in group]) for c in WATCHED_CLASSES}})
    return out


def markdown(rows):
    fusions = sorted({f for row in rows for f in row.get("ablation", {})})
    head = ["option", "seed", "head", "trunk", "OS", "fused at", "aux loss", "final.keras mIoU",
            "evaluated mIoU", *[f"ablation: {f}" for f in fusions], *WATCHED_CLASSES]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 7 + "---:|" * (len(head) - 7)]
    for row in rows:
        cells = [row["option"], str(row["seed"]), row["head"], row["backbone"], str(row["output_stride"]),
                 row["fuse_at"], f"{_aux(row):g}", percent(row["final_mean_iou"]),
                 percent(row.get("evaluated_mean_iou")),
                 *[percent(row.get("ablation", {}).get(f)) for f in fusions],
                 *[percent(row.get("watched_iou", {}).get(c)) for c in WATCHED_CLASSES]]
        lines.append("| " + " | ".join(cells) + " |")
    means = summary(rows)
    if means:
        lines += ["", "| option | fused at | aux loss | seeds | final.keras mIoU, mean +- std | "
                  + " | ".join(f"{c}, mean +- std" for c in WATCHED_CLASSES) + " |",
                  "|---|---|---|---|---:|" + "---:|" * len(WATCHED_CLASSES)]
        fmt = lambda s: "-" if s is None else f"{s[0]:.1f} +- {s[1]:.1f}"
        for m in means:
            lines.append(f"| {m['option']} | {m['fuse_at']} | {m['aux_loss_weight']:g} | "
                         f"{','.join(map(str, m['seeds']))} | "
                         f"{fmt(m['final_mean_iou'])} | " + " | ".join(fmt(m[c]) for c in WATCHED_CLASSES) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--options", default=",".join(DEFAULT_OPTIONS),
                        help="comma list of presets (default: every realtime-<head>-<trunk>)")
    parser.add_argument("--fuse-at", choices=("input", "decoder"), default=None,
                        help="train every option with this fusion resolution (default: each preset's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="train each option with each of these seeds (default: the preset's seed only)")
    parser.add_argument("--runs", default=os.path.join(ROOT, "runs"), help="where the run folders go")
    parser.add_argument("--out", default=RESULTS, help="results path without extension (.json and .md)")
    parser.add_argument("--smoke", action="store_true",
                        help="2 options, 2 steps each on a tiny set in a temporary folder (checks the plumbing)")
    args = parser.parse_args(argv)
    options = args.options.split(",")
    unknown = [o for o in options if o not in DEFAULT_OPTIONS + ALSO_ACCEPTED]
    if unknown:
        parser.error(f"unknown options {unknown}; choose from {DEFAULT_OPTIONS + ALSO_ACCEPTED}")
    extra = []
    if args.smoke:
        import tempfile

        scratch = tempfile.mkdtemp(prefix="realtime-options-smoke-")
        options = options[:1] + [o for o in options[1:] if "lraspp" in o][:1]
        extra = [*SMOKE_OVERRIDES, "--data-dir", os.path.join(scratch, "data")]
        args.runs, args.out = os.path.join(scratch, "runs"), os.path.join(scratch, "realtime_options")

    rows = []
    for name in options:
        for seed in args.seeds or [None]:
            folder = run_dir(args.runs, name, args.fuse_at, seed)
            run = RunFolder(folder)
            # Finished once train.py's evaluation is written too: a run killed during it has its
            # metrics.json, and train.py then finishes the evaluation alone.
            if os.path.isfile(run.metrics) and evaluation_finished(run.evaluation):
                print(f"{name}: finished in {folder}, skipped", flush=True)
            else:
                seconds = train(name, folder, args.fuse_at, seed, extra, print)
                print(f"{name}: trained in {seconds / 60:.1f} min", flush=True)
            rows.append(collect(name, folder))
            # Written after every run, so a killed sweep keeps what it has.
            os.makedirs(os.path.dirname(args.out), exist_ok=True)
            write_json(args.out + ".json", {"command": " ".join(sys.argv), "rows": rows,
                                            "summary": summary(rows)})
            write_text(args.out + ".md", markdown(rows))
    print(markdown(rows))
    print(f"wrote {args.out}.json and {args.out}.md")


if __name__ == "__main__":
    main()
