"""The fusion study: each fusion trained on its own (the paper's Table II claim), several seeds.

    python benchmarks/fusion_study.py                                   # main job's scenes, 3 seeds
    python benchmarks/fusion_study.py --regime large --seeds 0 1 2 3 4  # 512x1024 scenes, crops
    python benchmarks/fusion_study.py --smoke --variants single,eq1 --seeds 0 --out /tmp/study
    python benchmarks/fusion_study.py --regime large --summarize        # the tables from the records only

Every variant trains through `train.py` with the same data, steps and recipe as the main job
(`python train.py`), changing only what the variant names:

    single     the DeepLabV3+ alone (fusion "high": the low scale is not computed)
    average    two scales, trained through the average of the two maps
    max        two scales, trained through their per-class maximum
    eq1        two scales, trained through eq. 1 (fused-only loss, the paper's recipe)
    eq1_aux    eq. 1 plus per-scale auxiliary losses (aux_loss_weight 0.4, the presets' default)
    attention  two scales, learned attention fusion (Tao et al.)

Each trained model (final.keras: the last epoch, not a model picked on the validation set) is
then scored by evaluate.py with the test-time fusion ablation. Runs go in OUT/runs/VARIANT-seedS;
a finished run (its record, OUT/records/VARIANT-seedS.json) is skipped, an interrupted one resumes
(train.py resumes from its backup), so a stop loses at most the run in progress. After every run
OUT/results.json and OUT/table.md are rewritten from all finished runs; the records, results.json
and table.md are what gets committed (OUT/data and OUT/runs are ignored by git). Each record keeps
the wall and CPU time of train.py and the load average before and after: both times grow with
the load (TensorFlow's threads spin when the cores are shared), so compare them only between runs
at the same load.
"""

import argparse
import glob
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from synergyseg.atomic import write_json, write_text  # noqa: E402
from synergyseg.training.config import AUX_LOSS_WEIGHT, SYNTHETIC_STUDY_EPOCHS  # noqa: E402

# Each variant names its auxiliary loss weight: the presets' default (AUX_LOSS_WEIGHT for two-scale
# fusions) is the study's own finding, so the study does not read it. eq1_aux is the main job's
# recipe (`python train.py`) at the study's 15 epochs.
VARIANTS = {
    "eq1": {"fusion": "uncertainty", "aux_loss_weight": 0.0},
    "single": {"fusion": "high", "aux_loss_weight": 0.0},
    "average": {"fusion": "average", "aux_loss_weight": 0.0},
    "max": {"fusion": "max", "aux_loss_weight": 0.0},
    "eq1_aux": {"fusion": "uncertainty", "aux_loss_weight": AUX_LOSS_WEIGHT},
    "attention": {"fusion": "attention", "aux_loss_weight": 0.0},
}
# Both regimes use the main job's preset ("synthetic": ResNet-18 width 16, 50 steps of 8 crops an
# epoch) at SYNTHETIC_STUDY_EPOCHS epochs (15, the main job's count when the study started);
# "large" renders the scenes at 512x1024 and trains on 256x512 crops, so near objects are larger
# than what the full-scale branch sees, as on Cityscapes; validation is at full size. Its crops
# have 4x the pixels, so an epoch is 25 steps of 4 crops (a quarter of the 400 scenes): the same
# pixels and epochs as the synthetic regime (at 50 steps of 8 crops a run took ~90 min of a core).
REGIMES = {
    "synthetic": {"epochs": SYNTHETIC_STUDY_EPOCHS},
    "large": {"epochs": SYNTHETIC_STUDY_EPOCHS, "synthetic_size": (512, 1024), "crop_size": (256, 512),
              "batch_size": 4, "steps_per_epoch": 25},
}
# --smoke runs eagerly: two steps do not pay for tracing the training graph.
SMOKE = {"epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "synthetic_train": 8,
         "synthetic_val": 2, "synthetic_size": (64, 128), "crop_size": (32, 64), "run_eagerly": True}
THIN = ("pole", "traffic sign", "person")
LARGE = ("truck", "building")
# Cars: the class two-scale models lost in some seeds of the Cityscapes-layout runs.
WATCHED = ("car",)


def _flag(name, value):
    text = "x".join(map(str, value)) if isinstance(value, tuple) else str(value)
    return ["--" + name.replace("_", "-"), text]


def _write_data(out, overrides):
    """The scenes every run reads, from seed 0 whatever the runs' seeds (train.py would draw
    them from the first run's seed); kept and reused when already there."""
    from synergyseg.data import synthetic
    from synergyseg.training.config import preset

    config = preset("synthetic", **{k: v for k, v in overrides.items() if k.startswith("synthetic_")})
    data_dir = os.path.join(out, "data")
    # generate() resumes an interrupted conversion and refuses other parameters.
    if not (glob.glob(os.path.join(data_dir, "train-*")) and glob.glob(os.path.join(data_dir, "val-*"))):
        height, width = config.synthetic_size
        synthetic.generate(data_dir, num_train=config.synthetic_train, num_val=config.synthetic_val,
                           height=height, width=width, seed=0, log=None)


def run_one(out, variant, seed, regime_overrides, log):
    """Trains and evaluates one variant and seed unless already done; returns its record."""
    run_dir = os.path.join(out, "runs", f"{variant}-seed{seed}")
    # Records sit apart from the run folders (models, backups), so they can be committed alone.
    record_path = os.path.join(out, "records", f"{variant}-seed{seed}.json")
    if os.path.exists(record_path):
        with open(record_path) as f:
            return json.load(f)
    overrides = {**regime_overrides, **VARIANTS[variant], "seed": seed, "run_dir": run_dir,
                 "data_dir": os.path.join(out, "data")}
    command = [sys.executable, os.path.join(ROOT, "train.py"), "--preset", "synthetic",
               "--no-evaluation"]
    for name, value in overrides.items():
        command += _flag(name, value)
    resumed = os.path.isdir(os.path.join(run_dir, "backup"))
    log(f"{variant} seed {seed}: training{' (resuming)' if resumed else ''} -> {run_dir}")
    os.makedirs(run_dir, exist_ok=True)
    before, start, load = resource.getrusage(resource.RUSAGE_CHILDREN), time.time(), os.getloadavg()[0]
    _run(command, os.path.join(run_dir, "study_train.log"))
    after, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.time() - start
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    evaluation = os.path.join(run_dir, "study")
    _run([sys.executable, os.path.join(ROOT, "evaluate.py"), os.path.join(run_dir, "final.keras"),
          "--out", evaluation, "--no-speed", "--figures", "0", "--no-progress"],
         os.path.join(run_dir, "study_evaluate.log"))
    with open(os.path.join(evaluation, "results.json")) as f:
        results = json.load(f)
    record = {"variant": variant, "seed": seed, "train_cpu_s": round(cpu, 1),
              "train_wall_s": round(wall, 1), "load_before": load, "load_after": os.getloadavg()[0],
              "resumed": resumed, **_scores(results)}
    os.makedirs(os.path.dirname(record_path), exist_ok=True)
    write_json(record_path, record)
    log(f"{variant} seed {seed}: mIoU {100 * record['miou']:.1f} "
        f"(cpu {cpu / 60:.1f} min, wall {wall / 60:.1f} min)")
    return record


def _run(command, log_path):
    with open(log_path, "a") as log_file:
        done = subprocess.run(command, stdout=log_file, stderr=subprocess.STDOUT, cwd=ROOT)
    if done.returncode != 0:
        with open(log_path) as f:
            tail = f.read()[-3000:]
        raise SystemExit(f"{' '.join(command)} failed (exit {done.returncode}); end of {log_path}:\n{tail}")


def _scores(results):
    """mIoU and per-class IoU of the model and of each test-time fusion, from results.json."""
    def record(scores):
        return {"miou": scores["mean_iou"], "iou": scores["per_class_iou"]}

    ablation = {name: record(scores) for name, scores in results.get("ablation", {}).items()}
    return {**record(results["accuracy"]), "ablation": ablation}


def _mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    values = 100 * np.asarray(values, np.float64)
    spread = values.std(ddof=1) if len(values) > 1 else float("nan")
    return f"{values.mean():.1f} ± {spread:.1f}" if len(values) > 1 else f"{values.mean():.1f}"


def load_records(out):
    """Every finished run's record in OUT/records, seed by seed in VARIANTS order."""
    records = []
    for path in glob.glob(os.path.join(out, "records", "*.json")):
        with open(path) as f:
            records.append(json.load(f))
    order = list(VARIANTS)
    return sorted(records, key=lambda r: (r["seed"], order.index(r["variant"])))


def _paired(records, variant, other):
    """`variant` minus `other` in mIoU points on the seeds both finished: (mean, std, n)."""
    by_seed = {v: {r["seed"]: 100 * r["miou"] for r in records if r["variant"] == v} for v in (variant, other)}
    seeds = sorted(set(by_seed[variant]) & set(by_seed[other]))
    differences = np.asarray([by_seed[variant][s] - by_seed[other][s] for s in seeds], np.float64)
    if not len(differences):
        return None
    return differences.mean(), differences.std(ddof=1) if len(differences) > 1 else float("nan"), len(seeds)


def summarize(records, header):
    """The markdown tables of the finished runs: one row per variant (mean ± std over seeds), the
    test-time ablation, mIoU per seed, and each variant against the single-scale model, plain
    averaging and eq. 1 on the seeds both finished (paired: a seed fixes the initial weights and
    the batches)."""
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in records)]
    classes = [c for c in THIN + WATCHED + LARGE if records and c in records[0]["iou"]]
    lines = [header, "",
             "| trained with | seeds | mIoU | " + " | ".join(classes) + " | train wall min (load) |",
             "|---|---:|---:|" + "---:|" * len(classes) + "---:|"]
    for variant in variants:
        rows = [r for r in records if r["variant"] == variant]
        if not rows:
            continue
        cells = [_mean_std([r["iou"].get(c) for r in rows]) for c in classes]
        wall = np.mean([r["train_wall_s"] for r in rows]) / 60
        load = np.mean([r.get("load_before", np.nan) for r in rows])
        lines.append(f"| {variant} | {len(rows)} | {_mean_std([r['miou'] for r in rows])} | "
                     + " | ".join(cells) + f" | {wall:.1f} ({'n/a' if np.isnan(load) else f'{load:.1f}'}) |")
    fusions = sorted({f for r in records for f in r["ablation"]})
    if fusions:
        lines += ["", "Test-time ablation (mIoU, mean ± std over seeds) of each trained model:", "",
                  "| trained with | " + " | ".join(fusions) + " |",
                  "|---|" + "---:|" * len(fusions)]
        for variant in variants:
            rows = [r for r in records if r["variant"] == variant]
            if rows:
                lines.append(f"| {variant} | " + " | ".join(
                    _mean_std([r["ablation"].get(f, {}).get("miou") for r in rows]) for f in fusions)
                    + " |")
    seeds = sorted({r["seed"] for r in records})
    lines += ["", "mIoU of final.keras per seed:", "",
              "| trained with | " + " | ".join(f"seed {s}" for s in seeds) + " |",
              "|---|" + "---:|" * len(seeds)]
    for variant in variants:
        miou = {r["seed"]: f"{100 * r['miou']:.1f}" for r in records if r["variant"] == variant}
        lines.append(f"| {variant} | " + " | ".join(miou.get(s, "") for s in seeds) + " |")
    references = [v for v in ("single", "average", "eq1") if v in variants]
    if references:
        lines += ["", "Paired differences in mIoU points (row minus column on the seeds both "
                      "finished: mean ± std (seeds)):", "",
                  "| trained with | " + " | ".join(f"- {v}" for v in references) + " |",
                  "|---|" + "---:|" * len(references)]
        for variant in variants:
            cells = []
            for other in references:
                paired = None if other == variant else _paired(records, variant, other)
                if paired is None:
                    cells.append("")
                else:
                    mean, std, n = paired
                    cells.append(f"{mean:+.1f} ({n})" if n == 1 else f"{mean:+.1f} ± {std:.1f} ({n})")
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_summary(out, regime, overrides, header):
    """results.json and table.md from every finished run in OUT/records; returns the table."""
    records = load_records(out)
    write_json(os.path.join(out, "results.json"),
               {"regime": regime, "overrides": {k: list(v) if isinstance(v, tuple) else v
                                                for k, v in overrides.items()},
                "runs": records})
    table = summarize(records, header)
    write_text(os.path.join(out, "table.md"), table)
    return table


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[1:]))
    p.add_argument("--regime", choices=sorted(REGIMES), default="synthetic")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help="comma-separated subset of: %(default)s")
    p.add_argument("--out", help="study folder (default: benchmarks/results/fusion_study_REGIME)")
    p.add_argument("--smoke", action="store_true", help="a few steps on tiny scenes (tests)")
    p.add_argument("--summarize", action="store_true",
                   help="only rebuild results.json and table.md from OUT/records (no training)")
    args = p.parse_args(argv)
    args.variants = args.variants.split(",")
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        p.error(f"--variants: unknown {unknown}; expected names from {list(VARIANTS)}")
    args.out = args.out or os.path.join(ROOT, "benchmarks", "results", f"fusion_study_{args.regime}")
    return args


def main(argv=None):
    args = parse_args(argv)
    overrides = {**REGIMES[args.regime], **(SMOKE if args.smoke else {})}
    header = (f"Fusion study, regime `{args.regime}`{' (smoke)' if args.smoke else ''}: "
              f"preset synthetic with {json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()})}; "
              f"final.keras scored on the validation scenes")
    if args.summarize:
        print(write_summary(args.out, args.regime, overrides, header), end="")
        return 0
    _write_data(args.out, overrides)
    # Seed-major order: after each seed every variant has the same number of runs. The table is
    # rebuilt from every record after each run, so studies of several variant subsets (or several
    # processes) add up in it.
    for seed in args.seeds:
        for variant in args.variants:
            run_one(args.out, variant, seed, overrides, log=print)
            table = write_summary(args.out, args.regime, overrides, header)
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
