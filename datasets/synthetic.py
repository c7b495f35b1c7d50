"""Generate the synthetic street-scene set as TFRecord shards (runs offline, deterministic by seed).

    python datasets/synthetic.py --out data/synthetic
    python datasets/synthetic.py --out /tmp/tiny --num-train 16 --num-val 4 --height 128 --width 256
    python datasets/synthetic.py --layout cityscapes --out data/cs_root   # then datasets/cityscapes.py
"""

import argparse
import sys

from synergyseg.quiet import quiet_tensorflow

quiet_tensorflow()  # first: drops TensorFlow's start-up lines (a no-op once `import synergyseg` ran it)

from synergyseg.data import synthetic, synthetic_cityscapes  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output directory for the shards (or the "
                        "Cityscapes-layout root)")
    parser.add_argument("--layout", choices=["shards", "cityscapes"], default="shards",
                        help="shards: TFRecord shards train.py reads; cityscapes: PNG files in "
                             "Cityscapes' official layout with label ids, for datasets/cityscapes.py")
    parser.add_argument("--num-train", type=int, default=400, help="training scenes")
    parser.add_argument("--num-val", type=int, default=50, help="validation scenes")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0, help="the set is a function of it")
    parser.add_argument("--num-shards", type=int, default=8, help="training shards")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    args = parser.parse_args()
    try:
        if args.layout == "cityscapes":
            synthetic_cityscapes.generate(args.out, num_train=args.num_train, num_val=args.num_val,
                                          height=args.height, width=args.width, seed=args.seed)
            return
        synthetic.generate(args.out, num_train=args.num_train, num_val=args.num_val,
                           height=args.height, width=args.width, seed=args.seed,
                           num_shards=args.num_shards, workers=args.workers)
    except (ValueError, OSError) as e:  # e.g. a resume with other parameters
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
