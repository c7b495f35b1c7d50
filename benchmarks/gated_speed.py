"""Gated inference against the single- and two-scale models: mIoU, measured latency and conv FLOPs, in one run.

Examples:
    python benchmarks/gated_speed.py                                    # main job's model, then R50 timing
    python benchmarks/gated_speed.py --model runs/synthetic --timing-backbones --repeats 5   # no R50

Part 1, the trained model (default runs/synthetic) on its validation set: mIoU of single-scale,
two-scale and gated inference at each fraction (both ways of feeding the ASPP image pooling, "low"
and "tile") and threshold, and each one's latency at the data's size, timed round-robin in one run.
Part 2, timing only (random weights, random images): ResNet-50 at 512x1024 and 1024x2048.
Writes --out/gated_speed.json and gated_speed.png (part 1: mIoU against latency and CPU time),
--out/gated_timing.json (part 2) and prints the tables. Latency is the median wall-clock time per
image; CPU time (this process, all threads) is printed beside it because on a shared machine the
wall clock swings with the other jobs while the CPU time does not.
"""

import argparse
import datetime
import os
import sys
import time

import synergyseg  # noqa: E402  (first: TensorFlow loads without its start-up lines, synergyseg.quiet)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from synergyseg.atomic import atomic_output, write_json  # noqa: E402
from synergyseg.evaluation import MODEL_KEY, Predictor, evaluate_batches, validation_batches  # noqa: E402
from synergyseg.evaluation.speed import traced  # noqa: E402
from synergyseg.run_folder import RunFolder, resolve_model_path  # noqa: E402
from synergyseg.models.flops import conv_flops  # noqa: E402
from synergyseg.models.gated import (  # noqa: E402
    DEFAULT_MARGIN, DEFAULT_POOLING, DEFAULT_TILE_SIZE, GatedSynergySeg, gated_conv_flops, gated_synergyseg, select_tiles,
    tile_scores, tiles_selected)
from synergyseg.models.names import UNCERTAINTY  # noqa: E402
from synergyseg.models.rewrite import rewrite_for_inference  # noqa: E402
from synergyseg.run_folder import load_model  # noqa: E402
from synergyseg.training.config import PRESETS, preset  # noqa: E402
from synergyseg.training.run import build_model, inference_model  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import cpu_name  # noqa: E402

# The settings: 0 is the low scale alone, 1 every tile.
FRACTIONS = (0.0, 0.1, 0.25, 0.4, 0.6, 1.0)
TIMING_SIZES = ((512, 1024), (1024, 2048))


def label_map_fn(model):
    """The timed call: the model, the argmax and the uint8 class map on the host (as speed.measure)."""
    return traced(lambda x: tf.cast(tf.argmax(model(x, training=False), axis=-1), tf.uint8))


def median_wall_and_cpu(fns, x, repeats, warmup=2):
    """Median wall-clock and CPU seconds (this process, all threads) per call of each function.

    Timed round-robin so machine noise hits all alike. On a shared, loaded machine the wall clock
    swings with the other jobs (3x between rounds here); the process's CPU time does not.
    """
    for fn in fns:
        for _ in range(warmup):
            np.asarray(fn(x))
    wall, cpu = [[] for _ in fns], [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start, start_cpu = time.perf_counter(), time.process_time()
            np.asarray(fn(x))  # wait for the result
            wall[i].append(time.perf_counter() - start)
            cpu[i].append(time.process_time() - start_cpu)
    return [(float(np.median(w)), float(np.median(c))) for w, c in zip(wall, cpu)]


def add_ratios(rows):
    two = next(r for r in rows if r["model"] == "two-scale")
    for row in rows:
        for key in ("latency_ms", "cpu_ms", "flops"):
            row[f"{key}_vs_two_scale"] = row[key] / two[key]


def over_images(fn):
    """One call runs `fn` on each image of a list, waiting for each result."""
    return lambda images: np.stack([fn(x).numpy() for x in images])


def mean_tiles(gated, batches, threshold):
    """Mean number of tiles per image a threshold selects on `batches` (from the gated model's uncertainty)."""
    scales = GatedSynergySeg(gated.submodel, gated.fusion, gated.tile_size, gated.margin, fraction=0.0,
                             pooling=gated.pooling, scale_outputs=True)
    counts = []
    for images, _, _ in batches:
        u = scales(tf.cast(images, tf.float32))[UNCERTAINTY][..., 0]
        scores = tf.reshape(tile_scores(u, gated.tile_size), (u.shape[0], -1))
        image, _ = select_tiles(scores, threshold=threshold, max_tiles=gated.max_tiles)
        counts.append(len(image) / u.shape[0])
    return float(np.mean(counts))


def accuracy_and_speed(args):
    model_path = resolve_model_path(args.model)
    model = load_model(model_path)
    data = args.data or RunFolder.of_model(model_path).config().val_files
    batches = list(validation_batches(data, 1, limit=args.limit))
    height, width = (int(d) for d in batches[0][0].shape[1:3])
    num_classes = model.num_classes
    sub = model.submodel

    entries = [("single-scale", "single", sub, None), ("two-scale", "two", model, None)]
    for pooling in ("low", "tile"):
        for f in FRACTIONS:
            entries.append((f"gated {f:g} ({pooling} pooling)", "gated",
                            gated_synergyseg(model, args.tile_size, args.margin, fraction=f, pooling=pooling), f))
    for t in args.thresholds:
        entries.append((f"gated >{t:g} ({DEFAULT_POOLING} pooling)", "gated",
                        gated_synergyseg(model, args.tile_size, args.margin, threshold=t), None))

    rows = []
    for label, kind, m, fraction in entries:
        print(f"scoring {label}...", flush=True)
        scores = evaluate_batches(Predictor(m), batches, num_classes, progress=False)[MODEL_KEY].scores()
        if kind == "single":
            flops = conv_flops(sub, height, width)
            tiles = None
        elif kind == "two":
            flops = conv_flops(sub, height, width) + conv_flops(sub, -(-height // 2), -(-width // 2))
            tiles = None
        else:
            tiles = (tiles_selected(height, width, args.tile_size, fraction) if fraction is not None
                     else mean_tiles(m, batches, m.threshold))
            flops = gated_conv_flops(sub, height, width, tiles, args.tile_size, args.margin)
        rows.append({"model": label, "miou": float(scores.mean_iou), "flops": float(flops), "tiles": tiles})

    # Timed on validation images, not random ones: a threshold's tile count depends on the image.
    images = [tf.cast(b[0], tf.float32) for b in batches[:args.timing_images]]
    print(f"timing {len(entries)} models at {height}x{width} on {len(images)} validation images, "
          f"{args.repeats} rounds...", flush=True)
    seconds = median_wall_and_cpu([over_images(label_map_fn(m)) for _, _, m, _ in entries], images, args.repeats)
    for row, (wall, cpu) in zip(rows, seconds):
        row["latency_ms"], row["cpu_ms"] = 1000 * wall / len(images), 1000 * cpu / len(images)
    add_ratios(rows)
    for row in rows:
        row["miou_minus_two_scale"] = 100 * (row["miou"] - rows[1]["miou"])
    return {"model": os.path.abspath(model_path), "data": data, "images": len(batches), "size": [height, width],
            "tile_size": args.tile_size, "margin": args.margin, "rows": rows}


def timing_model(name):
    """Random weights: a preset by its name (e.g. "realtime-cityscapes", the served two-scale model
    as train.py builds it), else a backbone under the paper's DeepLabV3+ with 19 classes."""
    if name in PRESETS:
        return inference_model(build_model(preset(name)))
    return synergyseg.build_synergyseg(19, backbone=name)


def timing_only(args, name, height, width):
    model = timing_model(name)
    sub = model.submodel
    two_scale_flops = conv_flops(sub, height, width) + conv_flops(sub, -(-height // 2), -(-width // 2))
    # The gated model's passes run rewritten (BatchNorm folded, dilated convs as taps); the
    # two-scale model rewritten the same way shows how much of the saving the rewrites alone give.
    rows = [("single-scale", sub, conv_flops(sub, height, width)),
            ("two-scale", model, two_scale_flops),
            ("two-scale rewritten", rewrite_for_inference(model), two_scale_flops)]
    for f in args.timing_fractions:
        tiles = tiles_selected(height, width, args.tile_size, f)
        rows.append((f"gated {f:g}", gated_synergyseg(model, args.tile_size, args.margin, fraction=f),
                     gated_conv_flops(sub, height, width, tiles, args.tile_size, args.margin)))
    print(f"timing {name} at {height}x{width}, {args.timing_repeats} rounds...", flush=True)
    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (1, height, width, 3)).astype("float32"))
    seconds = median_wall_and_cpu([label_map_fn(m) for _, m, _ in rows], x, args.timing_repeats, warmup=1)
    out = [{"model": label, "flops": float(flops), "latency_ms": 1000 * wall, "cpu_ms": 1000 * cpu}
           for (label, _, flops), (wall, cpu) in zip(rows, seconds)]
    add_ratios(out)
    return {"backbone": name, "size": [height, width], "rows": out}


def markdown(rows, accuracy):
    head = "| setting | " + ("mIoU | Δ mIoU vs two-scale | " if accuracy else "") + \
        "latency (ms) | latency / two-scale | CPU (ms) | CPU / two-scale | conv GFLOPs | FLOPs / two-scale |"
    lines = [head, "|---|" + "---:|" * (head.count("|") - 2)]
    for r in rows:
        cells = [r["model"]]
        if accuracy:
            cells += [f"{100 * r['miou']:.1f}", f"{r['miou_minus_two_scale']:+.1f}"]
        cells += [f"{r['latency_ms']:.0f}", f"{r['latency_ms_vs_two_scale']:.2f}", f"{r['cpu_ms']:.0f}",
                  f"{r['cpu_ms_vs_two_scale']:.2f}", f"{r['flops'] / 1e9:.1f}", f"{r['flops_vs_two_scale']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(path, result):
    figure = Figure(figsize=(11, 4.5), dpi=90)
    rows = result["rows"]
    for index, (key, what) in enumerate((("latency_ms", "wall-clock latency"), ("cpu_ms", "CPU time"))):
        ax = figure.add_subplot(1, 2, index + 1)
        for pooling, marker in (("tile", "o-"), ("low", "s--")):
            points = [r for r in rows if r["model"].endswith(f"({pooling} pooling)") and ">" not in r["model"]]
            ax.plot([r[key] for r in points], [100 * r["miou"] for r in points], marker,
                    label=f"gated, fraction {' / '.join(r['model'].split()[1] for r in points)} ({pooling} pooling)")
        for r in rows:
            if r["model"] in ("single-scale", "two-scale") or ">" in r["model"]:
                ax.plot(r[key], 100 * r["miou"], "*", markersize=11, label=r["model"])
        ax.set_xlabel(f"{what} per image (ms, {result['size'][0]}x{result['size'][1]})")
        ax.set_ylabel("mIoU (%)")
        ax.grid(True, alpha=0.3)
        if index == 0:
            ax.legend(fontsize=7)
    figure.suptitle("Gated inference on the main job's model (synthetic val): mIoU against time "
                    "(shared, loaded 2-core CPU)", fontsize=10)
    with atomic_output(path) as tmp:
        FigureCanvasAgg(figure).print_png(tmp)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="runs/synthetic", help="run folder or .keras file")
    p.add_argument("--data", help="validation TFRecord glob (default: the run's)")
    p.add_argument("--limit", type=int, help="first N validation images only")
    p.add_argument("--tile-size", type=int, default=DEFAULT_TILE_SIZE)
    p.add_argument("--margin", type=int, default=DEFAULT_MARGIN)
    p.add_argument("--thresholds", type=float, nargs="*", default=[0.1, 0.15])
    p.add_argument("--repeats", type=int, default=5, help="timed rounds for the trained model")
    p.add_argument("--timing-images", type=int, default=8, help="validation images per timed round")
    p.add_argument("--no-trained", action="store_true", help="skip part 1 (the trained model)")
    p.add_argument("--timing-backbones", nargs="*", default=["resnet50"],
                   help="random-weight models to time in part 2 (none: skip it): a backbone under "
                        "the paper's DeepLabV3+, or a preset, e.g. realtime-cityscapes")
    p.add_argument("--timing-sizes", nargs="*", default=[f"{h}x{w}" for h, w in TIMING_SIZES])
    p.add_argument("--timing-fractions", type=float, nargs="*", default=list(FRACTIONS))
    p.add_argument("--timing-repeats", type=int, default=3)
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()

    print(f"# {datetime.datetime.now():%Y-%m-%d %H:%M}  {cpu_name()}  {os.cpu_count()} cores  "
          f"load {os.getloadavg()[0]:.1f}  tensorflow {tf.__version__}", flush=True)
    result = {"date": f"{datetime.datetime.now():%Y-%m-%d %H:%M}", "cpu": cpu_name(), "cores": os.cpu_count(),
              "load_before": os.getloadavg()}
    if not args.no_trained:
        result["trained"] = accuracy_and_speed(args)
        result["load_after"] = os.getloadavg()
        print(markdown(result["trained"]["rows"], accuracy=True), flush=True)
        write_json(os.path.join(args.out, "gated_speed.json"), result, sort_keys=False)
        plot(os.path.join(args.out, "gated_speed.png"), result["trained"])
    if args.timing_backbones:
        result["timing"] = []
        for backbone in args.timing_backbones:
            for size in args.timing_sizes:
                h, w = (int(v) for v in size.split("x"))
                result["timing"].append(timing_only(args, backbone, h, w))
                result["load_after"] = os.getloadavg()
                print(markdown(result["timing"][-1]["rows"], accuracy=False), flush=True)
                # Written after each size, so what is measured survives a stop.
                write_json(os.path.join(args.out, "gated_timing.json"), result, sort_keys=False)
    print(f"load average before {result['load_before'][0]:.1f}, after {result['load_after'][0]:.1f}; "
          f"wrote {args.out}")


if __name__ == "__main__":
    main()
