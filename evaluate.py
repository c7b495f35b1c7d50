"""Evaluate a trained SynergySeg model: the paper's tables and pictures on your validation data.

    python evaluate.py runs/synthetic                       # run folder: best.keras + its config
    python evaluate.py model.keras --data "data/cityscapes/val-*.tfrecord" --dataset cityscapes
    python evaluate.py runs/cityscapes --flip --resize-factor 0.5 --limit 100
    python evaluate.py runs/cityscapes --no-ablation --cityscapes-results results/
    python evaluate.py runs/cityscapes --speed-only --speed-size 1024x2048 --jit --precision mixed_float16
    python evaluate.py runs/synthetic --gated 0.25 --gated-threshold 0.3 --speed-size 256x512

Writes report.md, results.json, accuracy.csv, ablation.csv, speed.csv, confusion_matrix.csv and
figures/*.png into --out (default RUN/evaluation) and prints the tables.
"""

import argparse
import sys

from synergyseg.quiet import quiet_tensorflow

quiet_tensorflow()  # first: drops TensorFlow's start-up lines (a no-op once `import synergyseg` ran it)

from synergyseg.evaluation import ABLATION_FUSIONS, EvaluationOptions, evaluate_model  # noqa: E402
from synergyseg.arguments import image_size  # noqa: E402


def parse_args(argv=None):
    defaults = EvaluationOptions(run_or_model="")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_or_model", metavar="RUN_OR_MODEL", help="run folder (best.keras) or .keras file")
    p.add_argument("--data", help="validation TFRecord glob (default: the run config's val_pattern)")
    p.add_argument("--out", dest="out_dir", help="output folder (default: RUN/evaluation)")
    p.add_argument("--dataset", choices=("synthetic", "cityscapes", "mapillary"),
                   help="class names and colors (default: the run config's dataset)")
    p.add_argument("--mapillary-config", help="Mapillary Vistas config.json (for --dataset mapillary)")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size,
                   help="images per batch; they must share one size")
    p.add_argument("--limit", type=int, help="evaluate only the first N images")
    p.add_argument("--resize-factor", type=float,
                   help="run the model on images resized by this factor (e.g. 0.5); scored at full size")
    p.add_argument("--flip", action="store_true", help="horizontal-flip test-time augmentation")
    p.add_argument("--fusions", default=",".join(ABLATION_FUSIONS),
                   help="fusions for the ablation, comma-separated (default: %(default)s)")
    p.add_argument("--no-ablation", action="store_true", help="skip the fusion ablation")
    p.add_argument("--gated", type=float, action="append", default=[], metavar="FRACTION",
                   help="also score and time gated inference, the high scale on this fraction of "
                        "tiles (repeatable: --gated 0.25 --gated 0.4)")
    p.add_argument("--gated-threshold", type=float, action="append", default=[], metavar="U",
                   help="also score and time gated inference on the tiles whose root-mean-square uncertainty is above U")
    p.add_argument("--figures", dest="num_figures", type=int, default=defaults.num_figures,
                   help="images in the qualitative figure; 0 writes no figures (default: %(default)s)")
    p.add_argument("--cityscapes-results", metavar="DIR",
                   help="also write label-id PNGs for the Cityscapes benchmark into DIR")
    p.add_argument("--no-speed", action="store_true", help="skip the FPS measurement")
    p.add_argument("--speed-only", action="store_true",
                   help="only time the model (no data needed; weights do not change the speed)")
    p.add_argument("--speed-size", type=image_size, default=defaults.speed_size, metavar="HxW",
                   help="input size for timing (default: 1024x2048)")
    p.add_argument("--speed-batch-size", type=int, default=defaults.speed_batch_size)
    p.add_argument("--speed-warmup", type=int, default=defaults.speed_warmup)
    p.add_argument("--speed-iterations", type=int, default=defaults.speed_iterations)
    p.add_argument("--jit", action="store_true", help="time with XLA compilation")
    p.add_argument("--precision", default=defaults.precision,
                   choices=("float32", "mixed_float16", "mixed_bfloat16"), help="precision for timing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    fusions = () if args.no_ablation else tuple(f for f in args.fusions.split(",") if f)
    options = EvaluationOptions(
        run_or_model=args.run_or_model, data=args.data, out_dir=args.out_dir, dataset=args.dataset,
        mapillary_config=args.mapillary_config, batch_size=args.batch_size, limit=args.limit,
        resize_factor=args.resize_factor, flip=args.flip, ablation=fusions,
        gated=tuple(args.gated), gated_thresholds=tuple(args.gated_threshold),
        num_figures=args.num_figures, cityscapes_results=args.cityscapes_results,
        accuracy=not args.speed_only, speed=not args.no_speed, speed_size=args.speed_size,
        speed_batch_size=args.speed_batch_size,
        speed_warmup=args.speed_warmup, speed_iterations=args.speed_iterations,
        jit_compile=args.jit, precision=args.precision, progress=not args.no_progress)
    return evaluate_model(options)


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"evaluate.py: error: {e}")
