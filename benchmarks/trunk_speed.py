"""Our MobileNetV3 trunks against keras.applications' own networks, in TFLite, in one run.

    python benchmarks/trunk_speed.py                          # 512x1024, float32, 2 threads
    python benchmarks/trunk_speed.py --size 256x512 --threads 1

Answers "is our trunk slow, or is the network?": each trunk of synergyseg.models.mobilenet is
built with its deepest features as the only output and timed beside keras.applications' network
cut at the same layer (MobileNetV3Large up to `expanded_conv_11_add` for "_cut16", the whole
"notop" network otherwise), both with random weights and BatchNorm statistics of one batch of
synthetic scenes, converted the way export converts (SavedModel, builtin ops, float32) with an
argmax over the channels as the output, uint8 frame in; then the half-size frame of each (the
second scale's pass). Timing as benchmarks/realtime_speed.py: it waits for an idle machine,
round-robin rounds, median. Writes benchmarks/results/trunk_speed.json (--out).
"""

import argparse
import os
import shlex
import sys

import synergyseg  # noqa: F401,E402  (first: TensorFlow loads without its start-up lines)

import keras  # noqa: E402

from synergyseg.atomic import write_json  # noqa: E402
from synergyseg.models.mobilenet import applications_arguments, applications_name, build_mobilenetv3  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import MAX_LOAD, OthersCPU, cpu_name, load_record, wait_for_idle  # noqa: E402
import realtime_speed as rs  # noqa: E402

# Our trunk name, its output stride, and the keras.applications layer it ends at (None: the output).
TRUNKS = (("mobilenetv3_large_cut16", 16, "expanded_conv_11_add"),
          ("mobilenetv3_small_minimal_cut16", 16, "expanded_conv_7_add"),
          ("mobilenetv3_small_minimal", 32, None),
          ("mobilenetv3_small", 32, None))
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "trunk_speed.json")


def deepest(model):
    """A model of `model`'s last output alone (our trunks return [skips..., deepest])."""
    out = model.outputs[-1]
    return keras.Model(model.inputs[0], out, name=model.name)


def applications_trunk(backbone, layer):
    constructor = getattr(keras.applications, applications_name(backbone))
    full = constructor(input_shape=(None, None, 3), include_top=False, weights=None,
                       include_preprocessing=True, **applications_arguments(backbone))
    return full if layer is None else keras.Model(full.input, full.get_layer(layer).output,
                                                  name=f"{full.name}_{layer}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--size", type=rs.parse_size, default=(512, 1024), help="frame HxW (default 512x1024)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--idle-wait", type=float, default=300,
                        help=f"seconds to wait for the load to fall below {MAX_LOAD} before timing")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    start = load_record()
    batch = rs.synthetic_batch((256, 512), 4, rs.BATCHNORM_SEED).astype("float32")
    h, w = args.size
    entries = []
    for backbone, output_stride, layer in TRUNKS:
        keras.utils.set_random_seed(0)
        for source, trunk in (("synergyseg", deepest(build_mobilenetv3(backbone, output_stride, skip_strides=()))),
                              ("keras.applications", applications_trunk(backbone, layer))):
            rs.set_batchnorm_statistics(trunk, batch)
            for size in ((h, w), ((h + 1) // 2, (w + 1) // 2)):
                content = rs.convert_other(trunk, size, "float32", None)
                entries.append({"trunk": backbone, "source": source, "size": f"{size[0]}x{size[1]}",
                                "output_shape": list(trunk.compute_output_shape((1, *size, 3))),
                                "runner": (lambda c=content: rs.tflite_runner(c, args.threads))})
    before = wait_for_idle(args.idle_wait)
    with OthersCPU() as others:
        for size in dict.fromkeys(e["size"] for e in entries):
            group = [e for e in entries if e["size"] == size]
            frame = rs.synthetic_batch(tuple(map(int, size.split("x"))), 1, rs.TIMING_SEED)
            rs.time_round_robin(group, frame, warmup=2, rounds=args.rounds)
    end = load_record()
    for e in entries:
        del e["runner"]
    print("| trunk | size | synergyseg ms | keras.applications ms | ratio |")
    print("|---|---|---:|---:|---:|")
    pairs = {}
    for e in entries:
        pairs.setdefault((e["trunk"], e["size"]), {})[e["source"]] = e["ms"]
    for (trunk, size), ms in pairs.items():
        print(f"| {trunk} | {size} | {ms['synergyseg']:.1f} | {ms['keras.applications']:.1f} | "
              f"{ms['synergyseg'] / ms['keras.applications']:.2f} |")
    print(f"# load: start {start['uptime']}; before timing {before['uptime']}; end {end['uptime']}; "
          f"other processes' CPU share {others.share}")
    write_json(args.out, {"command": shlex.join([sys.executable, *sys.argv]), "cpu": cpu_name(),
                          "cores": os.cpu_count(), "threads": args.threads, "rounds": args.rounds,
                          "load": {"start": start, "before_timing": before, "end": end},
                          "others_cpu_share": others.share, "entries": entries})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
