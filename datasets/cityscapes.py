"""Convert Cityscapes (official layout) to TFRecord shards with the 19 train ids.

    python datasets/cityscapes.py --root /data/cityscapes --out data/cityscapes
    python datasets/cityscapes.py --root /data/cityscapes --out data/cityscapes --splits val

`--root` holds leftImg8bit/ and gtFine/ as unzipped from the official zips.
"""

import argparse
import sys

from synergyseg.quiet import quiet_tensorflow

quiet_tensorflow()  # first: drops TensorFlow's start-up lines (a no-op once `import synergyseg` ran it)

from synergyseg.data import cityscapes  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="directory with leftImg8bit/ and gtFine/")
    parser.add_argument("--out", required=True, help="output directory for the shards")
    parser.add_argument("--splits", nargs="+", default=["train", "val"])
    parser.add_argument("--num-shards", type=int, default=16, help="shards per split")
    parser.add_argument("--image-format", choices=["png", "jpeg"], default="png",
                        help="png: the original files as is; jpeg: quality 95, faster to decode")
    parser.add_argument("--strict", action="store_true",
                        help="refuse label ids the dataset does not define (default: store them "
                             "as 255 and print how many pixels)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    args = parser.parse_args()
    try:
        cityscapes.convert(args.root, args.out, splits=args.splits, num_shards=args.num_shards,
                           image_format=args.image_format, strict=args.strict,
                           workers=args.workers)
    except (ValueError, OSError) as e:  # a bad file or folder: named in the message
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
