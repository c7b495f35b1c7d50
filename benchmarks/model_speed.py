"""Forward-pass speed of the single-scale DeepLabV3+ and the two-scale SynergySeg model, in one run.

Examples:
    python benchmarks/model_speed.py                      # ResNet-50, 512x1024, batch 1
    python benchmarks/model_speed.py --height 256 --width 512 --repeats 5
    python benchmarks/model_speed.py --fuse-at input      # the two-scale model one way only

Prints time per forward pass (median of round-robin rounds), conv FLOPs counted from the model,
GFLOP/s, the two-scale / single-scale time ratio next to the FLOP ratio (1.25 in theory), with and
without XLA, and a large float32 matmul's GFLOP/s as this machine's ceiling. The two-scale model
is timed fused at the input size and at the decoder's resolution (`fuse_at`, same weights), and
the single-scale model on the half-size image: where the second scale's time goes (two-scale minus
single-scale = that half-size pass + the rest: the downsample, resizes, softmax and fusion). The
single-scale and each two-scale model are also timed rewritten for inference (skip with
--no-rewritten; `synergyseg.models.rewrite.rewrite_for_inference`: BatchNorm folded, dilated convs
as TapConv2D), the same function up to float32 rounding. After
building, it waits for the machine to be idle (machine.py) and records the load before and after
timing in --out (JSON).
"""

import argparse
import datetime
import os
import shlex
import sys
import time

import synergyseg  # noqa: E402  (first: TensorFlow loads without its start-up lines, synergyseg.quiet)

import numpy as np  # noqa: E402
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from synergyseg.atomic import write_json  # noqa: E402
from synergyseg.evaluation.speed import traced  # noqa: E402
from synergyseg.models.flops import conv_flops  # noqa: E402
from synergyseg.models.rewrite import rewrite_for_inference  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import MAX_LOAD, OthersCPU, cpu_name, load_record, wait_for_idle  # noqa: E402

FUSE_AT = ("input", "decoder")
HALF = "single-scale on the half-size image"
REWRITTEN = ", rewritten"


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
    """This machine's float32 matmul GFLOP/s in TensorFlow and in numpy (BLAS) on an n x n product;
    the larger is the ceiling a convolution's GFLOP/s is compared with (on this project's CPU
    TensorFlow's own matmul ran below its convolutions: BENCHMARKS.md, "Model")."""
    a = tf.random.normal((n, n))
    f = tf.function(lambda a: tf.matmul(a, a))
    b = a.numpy()
    tf_rate = 2 * n**3 / median_seconds([f], a, repeats)[0] / 1e9
    numpy_rate = 2 * n**3 / median_seconds([lambda b: b @ b], b, repeats)[0] / 1e9
    return {"tensorflow": round(tf_rate, 1), "numpy": round(numpy_rate, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--num-classes", type=int, default=19)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fuse-at", default=",".join(FUSE_AT),
                        help="comma list of where the two-scale model fuses (default: both)")
    parser.add_argument("--no-xla", action="store_true", help="time the tf.function path only")
    parser.add_argument("--no-rewritten", action="store_true", help="skip the models rewritten for inference")
    parser.add_argument("--idle-wait", type=float, default=300,
                        help=f"seconds to wait for the load our model builds raised to fall below {MAX_LOAD}")
    parser.add_argument("--out", default=None, help="JSON file for the results (default: none)")
    args = parser.parse_args()
    fuse_ats = args.fuse_at.split(",")
    if not set(fuse_ats) <= set(FUSE_AT):
        parser.error(f"--fuse-at: expected a comma list of {FUSE_AT}, got {args.fuse_at!r}")
    start = load_record()

    two_scale = synergyseg.build_synergyseg(args.num_classes, backbone=args.backbone)
    single = synergyseg.submodel_of(two_scale)
    h, w = args.height, args.width
    flops_single = conv_flops(single, h, w)
    flops_half = conv_flops(single, (h + 1) // 2, (w + 1) // 2)
    flops_two = flops_single + flops_half
    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (1, h, w, 3)).astype("float32"))
    x_half = tf.image.resize(x, ((h + 1) // 2, (w + 1) // 2))  # the low scale's input size
    models = [("single-scale", single, flops_single, None),
              (HALF, single, flops_half, x_half)] + [
        (f"two-scale (fused at {where})", two_scale.with_fusion(fuse_at=where), flops_two, None)
        for where in fuse_ats]
    if not args.no_rewritten:
        models += [(label + REWRITTEN, rewrite_for_inference(model), flops, None)
                   for label, model, flops, own_input in models if own_input is None]
    fns, rows = [], []
    for jit in (False,) if args.no_xla else (False, True):
        for label, model, flops, own_input in models:
            call = traced(lambda t, m=model: m(t, training=False), jit_compile=jit)
            fns.append(call if own_input is None else (lambda t, c=call, i=own_input: c(i)))
            rows.append(("XLA" if jit else "tf.function", label, flops))

    devices = [d.device_type for d in tf.config.list_physical_devices()]
    print(f"# {datetime.date.today()}  {cpu_name()}  {os.cpu_count()} cores  devices={devices}")
    print(f"# tensorflow {tf.__version__}, keras {keras.__version__}, {args.backbone}, {h}x{w}, batch 1")
    print(f"# load at start: {start['uptime']}", flush=True)
    before = wait_for_idle(args.idle_wait)
    print(f"# load before timing: {before['uptime']}", flush=True)
    with OthersCPU() as others:
        matmul = matmul_gflops()
        seconds = median_seconds(fns, x, args.repeats)
    end = load_record()
    ceiling = max(matmul.values())
    print(f"matmul 4096^2 float32: TensorFlow {matmul['tensorflow']:.1f}, numpy {matmul['numpy']:.1f} "
          f"GFLOP/s (ceiling: the larger)")
    print("| path | model | ms / image | conv GFLOPs | GFLOP/s | % of matmul |")
    print("|---|---|---:|---:|---:|---:|")
    table = []
    for (path, label, flops), t in zip(rows, seconds):
        rate = flops / t / 1e9
        table.append(dict(path=path, model=label, ms=round(1000 * t, 1), gflops=round(flops / 1e9, 1),
                          gflop_per_s=round(rate, 1), percent_of_matmul=round(100 * rate / ceiling, 1)))
        row = table[-1]
        print(f"| {path} | {label} | {row['ms']:.0f} | {row['gflops']:.1f} | {row['gflop_per_s']:.1f} | "
              f"{row['percent_of_matmul']:.0f}% |")
    print(f"two-scale / single-scale FLOPs: {flops_two / flops_single:.3f}")
    time_ratios, second_scale = {}, []
    for path in dict.fromkeys(row[0] for row in rows):
        times = {label: t for (p, label, _), t in zip(rows, seconds) if p == path}
        for label, t in times.items():
            if label.startswith("two-scale"):
                # Against the single-scale model in the same form (rewritten or not).
                single_label = "single-scale" + (REWRITTEN if label.endswith(REWRITTEN) else "")
                time_ratios[f"{label} / {single_label} ({path})"] = round(t / times[single_label], 3)
                if label.endswith(REWRITTEN):
                    continue  # the half-size pass is timed unrewritten only
                extra = t - times[single_label]
                second_scale.append(dict(path=path, model=label, extra_ms=round(1000 * extra, 1),
                                         half_pass_ms=round(1000 * times[HALF], 1),
                                         rest_ms=round(1000 * (extra - times[HALF]), 1)))
    for name, ratio in time_ratios.items():
        print(f"{name} time: {ratio:.3f}")
    print("| path | model | two-scale - single-scale ms | half-size pass ms | rest (resizes, softmax, fusion) ms |")
    print("|---|---|---:|---:|---:|")
    for r in second_scale:
        print(f"| {r['path']} | {r['model']} | {r['extra_ms']:.0f} | {r['half_pass_ms']:.0f} | {r['rest_ms']:.0f} |")
    print(f"# load after timing: {end['uptime']}; other processes' CPU share while timing: {others.share}")
    if args.out:
        write_json(args.out, dict(
            command=shlex.join([sys.executable, *sys.argv]), cpu=cpu_name(), cores=os.cpu_count(),
            tensorflow=tf.__version__, keras=keras.__version__, backbone=args.backbone,
            size=f"{h}x{w}", repeats=args.repeats, matmul_gflop_per_s=matmul,
            load=dict(start=start, before_timing=before, end=end), others_cpu_share=others.share,
            rows=table, flop_ratio=round(flops_two / flops_single, 3), time_ratios=time_ratios,
            second_scale=second_scale))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
