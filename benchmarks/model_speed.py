"""Forward-pass speed of the single-scale DeepLabV3+ and the two-scale SynergySeg model, in one run.

Examples:
    python benchmarks/model_speed.py                      # ResNet-50, 512x1024, batch 1
    python benchmarks/model_speed.py --height 256 --width 512 --repeats 5

Prints time per forward pass (median), conv FLOPs counted from the model, GFLOP/s, the two-scale
/ single-scale time ratio next to the FLOP ratio (1.25 in theory), with and without XLA, and a
large float32 matmul's GFLOP/s as this machine's ceiling.
"""

import argparse
import datetime
import os
import platform
import time

import synergyseg  # noqa: E402  (first: TensorFlow loads without its start-up lines, synergyseg.quiet)

import numpy as np  # noqa: E402
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from synergyseg.models.flops import conv_flops  # noqa: E402


def median_seconds(fns, x, repeats, warmup=2):
    """Median seconds per call of each function, timed round-robin so machine noise hits all alike."""
    for fn in fns:
        for _ in range(warmup):
            np.asarray(fn(x))
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            start = time.perf_counter()
            np.asarray(fn(x))  # wait for the result
            ts.append(time.perf_counter() - start)
    return [float(np.median(ts)) for ts in times]


def matmul_gflops(n=4096, repeats=5):
    a = tf.random.normal((n, n))
    f = tf.function(lambda a: tf.matmul(a, a))
    return 2 * n**3 / median_seconds([f], a, repeats)[0] / 1e9


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--num-classes", type=int, default=19)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    two_scale = synergyseg.build_synergyseg(args.num_classes, backbone=args.backbone)
    single = synergyseg.submodel_of(two_scale)
    h, w = args.height, args.width
    flops_single = conv_flops(single, h, w)
    flops_two = flops_single + conv_flops(single, (h + 1) // 2, (w + 1) // 2)
    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (1, h, w, 3)).astype("float32"))

    devices = [d.device_type for d in tf.config.list_physical_devices()]
    print(f"# {datetime.date.today()}  {cpu_name()}  {os.cpu_count()} cores  devices={devices}")
    print(f"# tensorflow {tf.__version__}, keras {keras.__version__}, {args.backbone}, {h}x{w}, batch 1")
    ceiling = matmul_gflops()
    print(f"matmul 4096^2 float32: {ceiling:.1f} GFLOP/s (ceiling)")
    print("| path | model | ms / image | conv GFLOPs | GFLOP/s | % of matmul |")
    print("|---|---|---:|---:|---:|---:|")
    models = (("single-scale", single, flops_single), ("two-scale", two_scale, flops_two))
    fns, rows = [], []
    for jit in (False, True):
        for label, model, flops in models:
            fns.append(tf.function(lambda t, m=model: m(t, training=False), jit_compile=jit))
            rows.append(("XLA" if jit else "tf.function", label, flops))
    seconds = median_seconds(fns, x, args.repeats)
    for (path, label, flops), t in zip(rows, seconds):
        rate = flops / t / 1e9
        print(f"| {path} | {label} | {1000 * t:.0f} | {flops / 1e9:.1f} | {rate:.1f} | {100 * rate / ceiling:.0f}% |")
    ratios = {"tf.function": seconds[1] / seconds[0], "XLA": seconds[3] / seconds[2]}
    print(f"two-scale / single-scale FLOPs: {flops_two / flops_single:.3f}")
    for path, r in ratios.items():
        print(f"two-scale / single-scale time ({path}): {r:.3f}")


if __name__ == "__main__":
    main()
