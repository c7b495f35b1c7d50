"""Gated inference's accuracy curves beside chance and the oracle: fraction of tiles -> mIoU.

    python benchmarks/gated_curves.py --model runs/synthetic                 # the main job's model
    python benchmarks/gated_curves.py --model RUN --tile-sizes 64 128 --margins 0 16 32 --pooling tile low

For each tile setting (size, margin, pooling) the gated model runs twice on every validation image:
at fraction 0 (the low scale alone, `U(S_lo)`) and at fraction 1 (every tile through the high
scale). With a pixelwise fusion (eq. 1, average, max, low, high) each tile's output does not
depend on which other tiles are selected, so the class map of ANY choice of tiles is the fraction-1
map on the chosen tiles and the fraction-0 map elsewhere; the confusion matrix of a choice is the
sum of per-tile confusion matrices. That gives, from two passes, the mIoU of every choice of k
tiles per image (k = the gated model's count for the fraction, halves up):

    gate     the k tiles of highest root-mean-square uncertainty U(1 - max_c S_lo) (what
             GatedSynergySeg runs)
    random   k tiles drawn at random per image (--draws draws: mean and std)
    oracle   the k tiles where the fraction-1 map is right on the most more pixels than the
             fraction-0 map (the best choice by pixels fixed; mIoU weighs classes, so a
             score can beat it by a little)
    --scores other statistics of each tile's uncertainty ranked the same way (mean, max, 90th
             percentile), to choose the score by the curves

beside the two-scale model itself and the low scale alone; "tiling cost" is the two-scale mIoU
minus the fraction-1 mIoU (what cutting the image into windows loses). Writes OUT.json and
OUT.md. Speed is not measured here (benchmarks/gated_speed.py times the same settings).
"""

import argparse
import datetime
import itertools
import os
import subprocess
import sys

import synergyseg  # noqa: F401  (first: TensorFlow loads without its start-up lines, synergyseg.quiet)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from synergyseg.atomic import write_json, write_text  # noqa: E402
from synergyseg.evaluation import MODEL_KEY, Predictor, evaluate_batches, validation_batches  # noqa: E402
from synergyseg.evaluation.confusion import scores_from_confusion  # noqa: E402
from synergyseg.evaluation.speed import traced  # noqa: E402
from synergyseg.models.gated import (  # noqa: E402
    DEFAULT_MARGIN, DEFAULT_POOLING, DEFAULT_TILE_SIZE, PIXELWISE_FUSIONS, gated_synergyseg, tile_scores,
    tiles_for_fraction)
from synergyseg.models.names import FUSED, UNCERTAINTY  # noqa: E402
from synergyseg.models.synergy import as_synergyseg  # noqa: E402
from synergyseg.run_folder import RunFolder, load_model, resolve_model_path  # noqa: E402

FRACTIONS = (0.1, 0.25, 0.4, 0.6)
# Tile scores compared with the model's own (the root mean square), each a statistic of a tile's
# uncertainty.
SCORES = {"mean": np.mean, "max": np.max, "p90": lambda u: np.quantile(u, 0.9)}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "gated_curves")


def miou(confusion):
    """The evaluator's mIoU (0-1) of a confusion matrix."""
    return float(scores_from_confusion(confusion).mean_iou)


def tile_windows(height, width, tile_size):
    """The `(rows, cols)` slices of each tile of a `tile_size` grid, row-major (the last row and
    column cut at the edge): GatedSynergySeg's tile order."""
    return [(slice(r * tile_size, (r + 1) * tile_size), slice(c * tile_size, (c + 1) * tile_size))
            for r, c in itertools.product(range(-(-height // tile_size)), range(-(-width // tile_size)))]


def tile_confusions(labels, predicted, tile_size, num_classes):
    """`(rows * cols, C, C)` confusion matrices (rows: label, cols: prediction) of each tile of
    `tile_windows`, label values >= C ignored."""
    windows = tile_windows(*labels.shape, tile_size)
    out = np.zeros((len(windows), num_classes, num_classes), np.int64)
    for index, window in enumerate(windows):
        y, p = labels[window].ravel(), predicted[window].ravel()
        keep = y < num_classes
        out[index] = np.bincount(num_classes * y[keep].astype(np.int64) + p[keep],
                                 minlength=num_classes ** 2).reshape(num_classes, num_classes)
    return out


def tile_statistics(uncertainty, tile_size, names):
    """`{name: (rows * cols,) score}` of each tile of `tile_windows` of a `(h, w)` map, for the
    statistics of `SCORES` named."""
    tiles = [uncertainty[window] for window in tile_windows(*uncertainty.shape, tile_size)]
    return {name: np.array([SCORES[name](t) for t in tiles]) for name in names}


def collect(model, batches, tile_size, margin, pooling, num_classes, scores=()):
    """Per image: the fraction-0 and fraction-1 tile confusions, the tiles' gate scores and the
    other `scores` of their uncertainty."""
    low = gated_synergyseg(model, tile_size, margin, fraction=0.0, pooling=pooling, scale_outputs=True)
    every = gated_synergyseg(model, tile_size, margin, fraction=1.0, pooling=pooling)

    def low_outputs(x):
        out = low(x, training=False)
        return tf.argmax(out[FUSED], -1), out[UNCERTAINTY][..., 0]

    run_low = traced(low_outputs)
    run_every = traced(lambda x: tf.argmax(every(x, training=False), -1))
    images = []
    for image, label, _ in batches:
        x = tf.cast(image, tf.float32)
        lo, uncertainty = run_low(x)
        all_tiles = run_every(x)
        label = np.asarray(label)[0]
        images.append({
            "low": tile_confusions(label, np.asarray(lo)[0], tile_size, num_classes),
            "all": tile_confusions(label, np.asarray(all_tiles)[0], tile_size, num_classes),
            "score": np.asarray(tile_scores(uncertainty, tile_size))[0].ravel(),
            "scores": tile_statistics(np.asarray(uncertainty)[0], tile_size, scores)})
    return images


def choice_miou(images, chosen):
    """mIoU of a choice: `chosen[i]` the tile indices of image i that take the fraction-1 map."""
    total = sum(image["low"].sum(0) for image in images)
    for image, tiles in zip(images, chosen):
        if len(tiles):
            total = total + (image["all"][tiles] - image["low"][tiles]).sum(0)
    return miou(total)


def curves(images, fractions, draws, seed=0):
    """Rows per fraction: tiles chosen per image, and the mIoU of the gate, random and oracle choices."""
    rng = np.random.default_rng(seed)
    gain = [np.trace(i["all"], axis1=1, axis2=2) - np.trace(i["low"], axis1=1, axis2=2) for i in images]
    rows = []
    for fraction in fractions:
        counts = [int(tiles_for_fraction(fraction, len(i["score"]))) for i in images]
        # Ranked as GatedSynergySeg ranks (top_k: the highest first, ties to the lower index).
        def ranked(score):
            return [np.argsort(-score(i), kind="stable")[:k] for i, k in zip(images, counts)]

        gate = ranked(lambda i: i["score"])
        oracle = [np.argsort(-g, kind="stable")[:k] for g, k in zip(gain, counts)]
        random = [choice_miou(images, [rng.choice(len(i["score"]), k, replace=False) for i, k in zip(images, counts)])
                  for _ in range(draws)]
        rows.append({"fraction": fraction, "tiles_per_image": float(np.mean(counts)),
                     "gate": choice_miou(images, gate), "oracle": choice_miou(images, oracle),
                     "random_mean": float(np.mean(random)), "random_std": float(np.std(random, ddof=1)),
                     "random_draws": draws,
                     "other_scores": {name: choice_miou(images, ranked(lambda i, n=name: i["scores"][n]))
                                      for name in images[0]["scores"]}})
    return rows


def markdown(result):
    lines = [f"Model `{result['model']}` ({result['fuse_at']}-fused {result['fusion']}), "
             f"{result['images']} validation images of {result['size'][0]}x{result['size'][1]}: two-scale "
             f"{100 * result['two_scale']:.1f}, low scale alone {100 * result['low']:.1f} mIoU.", ""]
    for s in result["settings"]:
        lines += [f"Tiles {s['tile_size']} px, margin {s['margin']}, pooling {s['pooling']}: every tile "
                  f"{100 * s['every_tile']:.1f} (tiling cost {100 * (result['two_scale'] - s['every_tile']):+.1f})", "",
                  "| fraction | tiles per image | gate (RMS uncertainty) | random (mean ± std) | oracle | gate - two-scale | oracle - gate |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for r in s["curve"]:
            lines.append(f"| {r['fraction']:g} | {r['tiles_per_image']:.1f} | {100 * r['gate']:.1f} | "
                         f"{100 * r['random_mean']:.1f} ± {100 * r['random_std']:.1f} | {100 * r['oracle']:.1f} | "
                         f"{100 * (r['gate'] - result['two_scale']):+.1f} | {100 * (r['oracle'] - r['gate']):+.1f} |")
        names = list(s["curve"][0]["other_scores"])
        if names:
            lines += ["", "Other tile scores, the gate's mIoU at the same fractions: " + "; ".join(
                f"{name} " + " / ".join(f"{100 * r['other_scores'][name]:.1f}" for r in s["curve"])
                for name in names) + "."]
        lines.append("")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[1:]))
    p.add_argument("--model", default="runs/synthetic", help="run folder or .keras file (a SynergySeg)")
    p.add_argument("--data", help="validation TFRecord glob (default: the run's)")
    p.add_argument("--limit", type=int, help="first N validation images only")
    p.add_argument("--tile-sizes", type=int, nargs="+", default=[DEFAULT_TILE_SIZE])
    p.add_argument("--margins", type=int, nargs="+", default=[DEFAULT_MARGIN])
    p.add_argument("--pooling", nargs="+", default=[DEFAULT_POOLING], choices=("tile", "low"))
    p.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS))
    p.add_argument("--draws", type=int, default=20, help="random choices per fraction")
    p.add_argument("--scores", nargs="*", default=list(SCORES), choices=list(SCORES),
                   help="other tile scores ranked beside the model's (root-mean-square uncertainty)")
    p.add_argument("--out", default=RESULTS, help="output path without extension (.json and .md)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    path = resolve_model_path(args.model)
    model = as_synergyseg(load_model(path))
    fusion = model.fusion_name
    if fusion not in PIXELWISE_FUSIONS:
        sys.exit(f"{path}: fusion {fusion!r} is not pixelwise; a choice's map is not the fraction-1 map on "
                 "its tiles, so the curves cannot be read from two passes")
    data = args.data or RunFolder.of_model(path).config().val_files
    try:
        batches = list(validation_batches(data, 1, limit=args.limit))
    except FileNotFoundError as error:  # names the pattern that matched nothing
        sys.exit(f"--data: {error}")
    if not batches:
        sys.exit(f"{data}: no validation images")
    num_classes = model.num_classes
    height, width = (int(d) for d in batches[0][0].shape[1:3])
    settings = []
    for tile_size, margin, pooling in itertools.product(args.tile_sizes, args.margins, args.pooling):
        print(f"tiles {tile_size}, margin {margin}, pooling {pooling}: {len(batches)} images...", flush=True)
        images = collect(model, batches, tile_size, margin, pooling, num_classes, args.scores)
        every = choice_miou(images, [np.arange(len(i["score"])) for i in images])
        settings.append({"tile_size": tile_size, "margin": margin, "pooling": pooling,
                         "tiles_per_image": len(images[0]["score"]), "every_tile": every,
                         "low": choice_miou(images, [[] for _ in images]),
                         "curve": curves(images, args.fractions, args.draws)})
    # The two-scale model as served (its own fuse_at), scored by the evaluator.
    two_scale = evaluate_batches(Predictor(model), batches, num_classes, progress=False)[MODEL_KEY].scores()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    result = {"command": " ".join(["python", "benchmarks/gated_curves.py", *sys.argv[1:]]),
              "date": datetime.datetime.now().isoformat(timespec="minutes"), "commit": commit,
              "model": path, "fusion": fusion, "fuse_at": model.fuse_at, "data": data, "images": len(batches),
              "size": [height, width], "two_scale": float(two_scale.mean_iou),
              "low": settings[0]["low"], "settings": settings}
    write_json(args.out + ".json", result)
    text = markdown(result)
    write_text(args.out + ".md", text)
    print(text)
    print(f"wrote {args.out}.json and {args.out}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
