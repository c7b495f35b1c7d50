"""Convert Mapillary Vistas v1.2 labels (v1.2 or v2.0 bundle layout) to TFRecord shards.

    python datasets/mapillary.py --root /data/vistas --out data/mapillary --max-short-side 1024

Splits "training" and "validation" are written as train-*.tfrecord and val-*.tfrecord.
"""

import argparse
import sys

from synergyseg.quiet import quiet_tensorflow

quiet_tensorflow()  # first: drops TensorFlow's start-up lines (a no-op once `import synergyseg` ran it)

from synergyseg.data import mapillary  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="directory with config.json (or "
                        "config_v1.2.json), training/ and validation/")
    parser.add_argument("--out", required=True, help="output directory for the shards")
    parser.add_argument("--splits", nargs="+", default=["training", "validation"])
    parser.add_argument("--max-short-side", type=int, default=None,
                        help="shrink images so the shorter side is at most this (e.g. 1024)")
    parser.add_argument("--num-shards", type=int, default=32, help="shards per split")
    parser.add_argument("--strict", action="store_true",
                        help="refuse label ids the dataset does not define (default: store them "
                             "as 255 and print how many pixels)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    args = parser.parse_args()
    try:
        mapillary.convert(args.root, args.out, splits=args.splits,
                          max_short_side=args.max_short_side, num_shards=args.num_shards,
                          strict=args.strict, workers=args.workers)
    except (ValueError, OSError) as e:  # a bad file or folder: named in the message
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
