"""Where a forward pass spends its time, by TensorFlow op type (TF profiler, one traced call).

Examples:
    python benchmarks/op_profile.py                          # ResNet-50 DeepLabV3+, 512x1024
    python benchmarks/op_profile.py --model realtime --two-scale --size 1024x2048
    python benchmarks/op_profile.py --rewrite --by name     # BatchNorm folded; each op by its name

Prints each op type's share of the summed op time on TensorFlow's compute threads (the
executor's own "Process" events, which contain the ops, are left out).
"""

import argparse
import collections
import glob
import os
import tempfile

import synergyseg  # noqa: E402  (first: TensorFlow loads without its start-up lines, synergyseg.quiet)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: E402

from synergyseg.models.rewrite import rewrite_for_inference  # noqa: E402
from synergyseg.training.config import REALTIME_MODEL  # noqa: E402

MODELS = {"resnet50": dict(backbone="resnet50"), "realtime": REALTIME_MODEL}


def op_times(fn, x, by="type"):
    """Milliseconds per op type (or per op name, `by="name"`) of one call of `fn(x)` (after two
    untraced calls)."""
    for _ in range(2):
        np.asarray(fn(x))
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        np.asarray(fn(x))
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        with open(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)[-1], "rb") as f:
            space.ParseFromString(f.read())
    totals = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name  # "scope/.../op_name:OpType"
                if name.split(":")[-1] != "Process":
                    totals[name.split(":")[-1] if by == "type" else name] += event.duration_ps / 1e9
    return totals


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), default="resnet50")
    parser.add_argument("--size", default="512x1024", help="HxW")
    parser.add_argument("--two-scale", action="store_true", help="the SynergySeg model, not its submodel")
    parser.add_argument("--rewrite", action="store_true",
                        help="profile the model rewritten for inference (BatchNorm folded), as evaluation runs it")
    parser.add_argument("--by", choices=("type", "name"), default="type", help="group op time by op type or name")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    h, w = map(int, args.size.lower().split("x"))
    model = synergyseg.build_synergyseg(19, **MODELS[args.model])
    net = model if args.two_scale else model.submodel
    if args.rewrite:
        net = rewrite_for_inference(net)
    fn = tf.function(lambda t: net(t, training=False))
    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (1, h, w, 3)).astype("float32"))
    totals = op_times(fn, x, args.by)
    total = sum(totals.values())
    print(f"# {args.model} {'two-scale' if args.two_scale else 'single-scale'} {h}x{w}"
          f"{', rewritten for inference' if args.rewrite else ''}, "
          f"load average {os.getloadavg()[0]:.1f}; op time summed over compute threads {total:.0f} ms")
    print(f"| op {args.by} | ms | share |")
    print("|---|---:|---:|")
    for op, ms in totals.most_common(args.top):
        print(f"| {op} | {ms:.0f} | {100 * ms / total:.1f}% |")


if __name__ == "__main__":
    main()
