"""The README's first command, timed: `python train.py` in a fresh folder, end to end.

    python benchmarks/main_job.py                 # writes benchmarks/results/main_job.json
    python benchmarks/main_job.py --keep runs/mj  # keep the scenes and the run folder there
    python benchmarks/main_job.py --speed-of runs/mj/run   # only (re)time a kept run's model

Runs `python train.py --data-dir DIR/data --run-dir DIR/run` (the synthetic preset: what
`python train.py` runs, in a folder with no scenes yet, so scene generation, training, the final
validation and train.py's evaluation are all in the time), then records the wall time, the
validation mIoU and per-class IoU of final.keras (what training prints last), the mIoU of
best.keras from train.py's evaluation (what it prints after), the load before and after and the
command in --out. It first waits for the machine to be idle (machine.py). The
README's main-job numbers are read from that file (tests/test_docs.py). Run it with nothing else
of ours on the machine.

Then it times the trained model as the README's results table quotes it: it waits for the machine
to be idle again, runs `python evaluate.py RUN --speed-only --speed-size 256x512` (Keras float32,
batch 1, the scenes' size; two-scale and single-scale) and adds the latencies, the model's GFLOPs
(`synergyseg.models.flops.model_flops`, every op) and the load before and after under "speed".
"""

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from machine import MAX_LOAD, cpu_name, load_record, wait_for_idle  # noqa: E402
from synergyseg.atomic import write_json  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "results", "main_job.json")
SPEED_SIZE = (256, 512)  # the synthetic scenes' size
SPEED_ITERATIONS, SPEED_WARMUP = 20, 3


def time_model(run_dir, idle_wait):
    """The "speed" record of a trained run: evaluate.py's timing on an idle machine, and GFLOPs."""
    before = wait_for_idle(idle_wait)
    with tempfile.TemporaryDirectory(prefix="main-job-speed-") as out:
        command = [sys.executable, os.path.join(ROOT, "evaluate.py"), run_dir, "--speed-only",
                   "--speed-size", "x".join(map(str, SPEED_SIZE)), "--speed-warmup", str(SPEED_WARMUP),
                   "--speed-iterations", str(SPEED_ITERATIONS), "--out", out]
        print(f"$ {shlex.join(command)}\n# {before['uptime']}", flush=True)
        subprocess.run(command, check=True, cwd=ROOT)
        after = load_record()
        with open(os.path.join(out, "results.json")) as f:
            rows = json.load(f)["speed"]
    import synergyseg  # TensorFlow only now: the timing ran in its own process
    from synergyseg.models.flops import model_flops
    from synergyseg.run_folder import load_model, resolve_model_path

    model = synergyseg.with_fusion(load_model(resolve_model_path(run_dir)))
    flops = {"two-scale": model_flops(model, *SPEED_SIZE),
             "single-scale": model_flops(model.with_fusion("high"), *SPEED_SIZE)}
    return {"command": shlex.join(["evaluate.py", *command[2:-2]]), "load": {"before": before, "after": after},
            "rows": [{"model": r["model"], "size": f"{r['height']}x{r['width']}",
                      "latency_ms_median": round(r["latency_ms_median"], 1), "fps": round(r["fps"], 2),
                      "gflops": round(flops[r["model"]] / 1e9, 2), "jit_compile": r["jit_compile"],
                      "precision": r["precision"]} for r in rows]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--keep", help="folder for the scenes and the run (default: a temporary one, removed)")
    parser.add_argument("--out", default=RESULTS, help="results JSON (default: %(default)s)")
    parser.add_argument("--idle-wait", type=float, default=300,
                        help=f"seconds to wait first for the 1-minute load to fall below {MAX_LOAD}")
    parser.add_argument("--speed-of", metavar="RUN",
                        help="only time this kept run's model and update the \"speed\" entry of --out")
    args = parser.parse_args(argv)
    if args.speed_of:
        if not os.path.isfile(args.out):
            parser.error(f"--speed-of adds to {args.out}, which does not exist: run without it first")
        if not os.path.isdir(args.speed_of):
            parser.error(f"--speed-of {args.speed_of}: no such run folder")
        with open(args.out) as f:
            result = json.load(f)
        result["speed"] = time_model(args.speed_of, args.idle_wait)
        write_json(args.out, result)
        print(f"wrote {args.out}")
        return
    folder = args.keep or tempfile.mkdtemp(prefix="main-job-")
    if os.path.exists(os.path.join(folder, "run")) or os.path.exists(os.path.join(folder, "data")):
        parser.error(f"{folder} already holds data/ or run/: the timing needs a fresh folder")
    command = [sys.executable, os.path.join(ROOT, "train.py"), "--data-dir", os.path.join(folder, "data"),
               "--run-dir", os.path.join(folder, "run")]
    before = wait_for_idle(args.idle_wait)
    print(f"$ {shlex.join(command)}\n# {before['uptime']}", flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    wall = time.perf_counter() - start
    after = load_record()
    with open(os.path.join(folder, "run", "metrics.json")) as f:
        metrics = json.load(f)
    with open(os.path.join(folder, "run", "config.json")) as f:
        config = json.load(f)
    # What train.py's evaluation printed last: best.keras (the best epoch) on the same scenes.
    with open(os.path.join(folder, "run", "evaluation", "results.json")) as f:
        evaluated = json.load(f)
    result = {
        "command": "python train.py (" + shlex.join(["train.py", *command[2:]]) + ")",
        "cpu": cpu_name(), "cores": os.cpu_count(), "load": {"before": before, "after": after},
        "wall_s": round(wall, 1), "mean_iou": metrics["mean_iou"],
        "per_class_iou": metrics["per_class_iou"],
        "best_keras_mean_iou": evaluated["accuracy"]["mean_iou"],
        "config": {k: config[k] for k in ("preset", "backbone", "backbone_width", "epochs",
                                          "steps_per_epoch", "batch_size", "crop_size", "fusion",
                                          "aux_loss_weight", "seed")},
    }
    write_json(args.out, result)  # the training's record first: the timing below may be cut short
    print(f"main job: {wall / 60:.1f} min, final.keras mIoU {100 * metrics['mean_iou']:.1f}; wrote {args.out}")
    result["speed"] = time_model(os.path.join(folder, "run"), args.idle_wait)
    write_json(args.out, result)
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
