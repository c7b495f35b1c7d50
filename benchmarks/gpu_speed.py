"""GPU frames per second at 1024x2048, batch 1: ResNet-50 and the real-time model, one and two scales.

Examples:
    python benchmarks/gpu_speed.py                 # the table, on the first GPU
    python benchmarks/gpu_speed.py --smoke         # 64x128, one call each: checks it runs (CPU too)
    python benchmarks/gpu_speed.py --models realtime --iterations 20

Prints one table naming the device: FPS (median of --iterations timed calls after --warmup, each
call returning the uint8 class map to the host, as `synergyseg.evaluation.speed.measure` times
it) for float32, mixed_float16 and float32 under XLA, for the single-scale DeepLabV3+ and the
two-scale SynergySeg model, with random weights and 19 classes (speed does not depend on them).
"""

import argparse

import synergyseg  # noqa: E402  (first: TensorFlow loads without its start-up lines, synergyseg.quiet)

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from synergyseg.evaluation.speed import device_name, measure  # noqa: E402
from synergyseg.training.config import REALTIME_MODEL  # noqa: E402

MODELS = {"resnet50": dict(backbone="resnet50"), "realtime": REALTIME_MODEL}
# (label, precision, jit_compile)
SETTINGS = (("fp32", "float32", False), ("mixed_float16", "mixed_float16", False), ("XLA fp32", "float32", True))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma list of {sorted(MODELS)}")
    parser.add_argument("--smoke", action="store_true", help="64x128, 1 warm-up, 1 timed call")
    args = parser.parse_args()
    unknown = set(args.models.split(",")) - set(MODELS)
    if unknown:
        parser.error(f"unknown model(s) {sorted(unknown)}: expected {sorted(MODELS)}")
    if args.smoke:
        args.height, args.width, args.warmup, args.iterations = 64, 128, 1, 1
    if not tf.config.list_physical_devices("GPU") and not args.smoke:
        print("# no GPU found: these are CPU numbers (use --smoke to only check that it runs)")

    print(f"# device: {device_name()}; tensorflow {tf.__version__}, keras {keras.__version__}; "
          f"{args.height}x{args.width}, batch 1, median of {args.iterations} after {args.warmup} warm-up")
    print("| model | scales | " + " | ".join(f"{label} FPS" for label, _, _ in SETTINGS) + " |")
    print("|---|---|" + "---:|" * len(SETTINGS))
    for name in args.models.split(","):
        keras.utils.set_random_seed(0)
        model = synergyseg.build_synergyseg(19, **MODELS[name])
        for scales, net in (("single", model.submodel), ("two-scale", model)):
            fps = [measure(net, args.height, args.width, warmup=args.warmup, iterations=args.iterations,
                           jit_compile=jit, precision=precision, name=name)["fps"]
                   for _, precision, jit in SETTINGS]
            print(f"| {name} | {scales} | " + " | ".join(f"{f:.1f}" for f in fps) + " |", flush=True)


if __name__ == "__main__":
    main()
