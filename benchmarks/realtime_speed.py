"""Speed of the real-time model next to ResNet-50, single- and two-scale, on every CPU path, in one run.

Examples:
    python benchmarks/realtime_speed.py                                  # the full table
    python benchmarks/realtime_speed.py --models realtime --sizes 512x1024 --repeats 3
    python benchmarks/realtime_speed.py --paths keras,tflite-fp32 --trained runs/realtime/best.keras

One row per (model, scales, size, path): median ms per image (batch 1, class map out), FPS, conv
GFLOPs (synergyseg.models.flops, depthwise included), and % of a 4096x4096 float32 matmul's
GFLOP/s measured in the same run. Paths: Keras fp32 (tf.function), XLA (jit_compile), TFLite
float32 and full-integer int8 (ai-edge-litert, --threads threads). "half" rows time the
single-scale model at half the size, so the two-scale time splits into full scale + half scale
+ the rest (the image downsample, the half scale's upsample and the fusion).

--trained PATH adds the argmax agreement of each TFLite file with Keras on that trained model
(at its training scene size, calibrated and scored on the synthetic set): int8 is allowed as the
fast path only if it agrees with Keras on >= 98% of pixels (issue 9).
"""

import argparse
import datetime
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import synergyseg  # noqa: E402
from synergyseg.export import make_interpreter  # noqa: E402
from synergyseg.export.saved_model import SIGNATURE_KEY, serving_module  # noqa: E402
from synergyseg.export.serving import ClassMap, ImagesToFloat  # noqa: E402
from synergyseg.export.tflite import check_builtin_ops, calibration_images  # noqa: E402
from synergyseg.models.flops import conv_flops  # noqa: E402
from synergyseg.run_folder import load_model  # noqa: E402
from synergyseg.training.config import REALTIME_MODEL  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model_speed import cpu_name, matmul_gflops  # noqa: E402

MODELS = {"resnet50": dict(backbone="resnet50"), "realtime": REALTIME_MODEL}
PATHS = ("keras", "xla", "tflite-fp32", "tflite-int8")
NUM_CLASSES = 19  # Cityscapes: the classes' upsample, softmax and fusion run at full resolution
CALIBRATION = "data/synthetic/train-*.tfrecord"
AGREEMENT_IMAGES = "data/synthetic/val-*.tfrecord"


def class_map_model(model):
    """uint8 images -> int32 class map of `model` (what an application waits for)."""
    images = keras.Input((None, None, 3), dtype="uint8", name="images")
    return keras.Model(images, ClassMap(name="class_map")(model(ImagesToFloat()(images))))


def tflite_class_map(model, size, quantization, calibration):
    """A TFLite flatbuffer of `class_map_model(model)` at `size` (builtin ops only)."""
    module = serving_module(class_map_model(model), input_shape=(1, *size, 3))
    with tempfile.TemporaryDirectory() as saved:
        tf.saved_model.save(module, saved, signatures={SIGNATURE_KEY: module.serve})
        converter = tf.lite.TFLiteConverter.from_saved_model(saved, [SIGNATURE_KEY])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantization == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.representative_dataset = lambda: ([image] for image in calibration)
        content = converter.convert()
    check_builtin_ops(content)
    return content


def tflite_runner(content, threads):
    interpreter = make_interpreter(model_content=content, num_threads=threads)
    runner = interpreter.get_signature_runner(SIGNATURE_KEY)
    return lambda images: next(iter(runner(images=images).values()))


def calibration_set(size, count):
    if os.path.exists(os.path.dirname(CALIBRATION)):
        return list(calibration_images(CALIBRATION, size, count))
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (1, *size, 3), dtype=np.uint8) for _ in range(count)]


def time_ms(fn, images, repeats, warmup=1):
    for _ in range(warmup):
        np.asarray(fn(images))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.asarray(fn(images))
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def variants(model, size):
    """(scales label, Keras model, input size, conv FLOPs) of one model at one size."""
    h, w = size
    sub = model.submodel
    half = ((h + 1) // 2, (w + 1) // 2)
    full_flops, half_flops = conv_flops(sub, h, w), conv_flops(sub, *half)
    return [("single", sub, size, full_flops), ("half", sub, half, half_flops),
            ("two-scale", model, size, full_flops + half_flops)]


def speed_rows(args, ceiling):
    rows = []
    for name in args.models:
        keras.utils.set_random_seed(0)
        model = synergyseg.build_synergyseg(NUM_CLASSES, **MODELS[name])
        for size in args.sizes:
            for scales, keras_model, in_size, flops in variants(model, size):
                images = np.random.default_rng(0).integers(0, 256, (1, *in_size, 3), dtype=np.uint8)
                plain = class_map_model(keras_model)
                for path in args.paths:
                    if path in ("keras", "xla"):
                        fn = tf.function(lambda x, m=plain: m(x, training=False),
                                         jit_compile=path == "xla")
                    else:
                        quantization = path.split("-")[1]
                        calibration = calibration_set(in_size, args.calibration) if quantization == "int8" else None
                        fn = tflite_runner(tflite_class_map(keras_model, in_size, quantization, calibration),
                                           args.threads)
                    ms = time_ms(fn, images, args.repeats)
                    rate = flops / (ms / 1000) / 1e9
                    row = (name, scales, f"{in_size[0]}x{in_size[1]}", path, ms, 1000 / ms,
                           flops / 1e9, 100 * rate / ceiling)
                    print("| {} | {} | {} | {} | {:.0f} | {:.2f} | {:.1f} | {:.0f}% |".format(*row), flush=True)
                    rows.append(row)
    return rows


def print_ratios(rows):
    """Two-scale / single-scale time, and where the second scale's time goes."""
    by_key = {(r[0], r[1], r[3], r[2] if r[1] != "half" else None): r for r in rows}
    print("\n| model | size | path | two / single time | FLOPs ratio | half scale | rest (resizes + fusion) |")
    print("|---|---|---|---:|---:|---:|---:|")
    for (name, scales, path, size), row in by_key.items():
        if scales != "two-scale" or (name, "single", path, size) not in by_key:
            continue
        single = by_key[(name, "single", path, size)]
        h, w = map(int, size.split("x"))
        half = next((r for r in rows if r[:2] == (name, "half") and r[3] == path
                     and r[2] == f"{(h + 1) // 2}x{(w + 1) // 2}"), None)
        extra = row[4] - single[4]
        half_ms = half[4] if half else float("nan")
        print(f"| {name} | {size} | {path} | {row[4] / single[4]:.2f} | {row[6] / single[6]:.2f} | "
              f"{half_ms:.0f} ms | {extra - half_ms:.0f} ms |")


def agreement(path, threads, count=8):
    """Argmax agreement of TFLite float32 and int8 with Keras on a trained two-scale model."""
    from synergyseg.data import eval_dataset

    model = load_model(path)
    images = [tf.cast(image, tf.uint8).numpy() for image, _ in eval_dataset(AGREEMENT_IMAGES, limit=count)]
    size = images[0].shape[1:3]
    expected = [class_map_model(model).predict(image, verbose=0) for image in images]
    print(f"\nargmax agreement with Keras, trained model {path}, {len(images)} synthetic val scenes "
          f"{size[0]}x{size[1]} (int8 calibrated on {count} training scenes):")
    for quantization in ("float32", "int8"):
        calibration = calibration_set(size, count) if quantization == "int8" else None
        run = tflite_runner(tflite_class_map(model, size, quantization, calibration), threads)
        agree = np.mean([(run(image) == e).mean() for image, e in zip(images, expected)])
        print(f"  TFLite {quantization}: {100 * agree:.2f}% of pixels")


def parse_size(text):
    h, w = text.lower().split("x")
    return int(h), int(w)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma list of {sorted(MODELS)}")
    parser.add_argument("--sizes", default="512x1024,1024x2048", help="comma list of HxW")
    parser.add_argument("--paths", default=",".join(PATHS), help=f"comma list of {PATHS}")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="TFLite interpreter threads")
    parser.add_argument("--calibration", type=int, default=4, help="int8 calibration images")
    parser.add_argument("--trained", default=None, help="a trained realtime .keras for the agreement check")
    args = parser.parse_args()
    args.models = args.models.split(",")
    args.sizes = [parse_size(s) for s in args.sizes.split(",")]
    args.paths = args.paths.split(",")
    for bad in set(args.models) - set(MODELS) | set(args.paths) - set(PATHS):
        parser.error(f"unknown model or path {bad!r}: models {sorted(MODELS)}, paths {PATHS}")

    print(f"# {datetime.datetime.now():%Y-%m-%d %H:%M}  {cpu_name()}  {os.cpu_count()} cores  "
          f"load average {os.getloadavg()[0]:.1f}  tensorflow {tf.__version__}, keras {keras.__version__}")
    print(f"# {NUM_CLASSES} classes, batch 1, uint8 image in, int32 class map out; median of "
          f"{args.repeats}; TFLite {args.threads} threads")
    ceiling = matmul_gflops()
    print(f"matmul 4096^2 float32: {ceiling:.1f} GFLOP/s (the ceiling)")
    print("| model | scales | size | path | ms | FPS | conv GFLOPs | % of matmul |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    rows = speed_rows(args, ceiling)
    print_ratios(rows)
    if args.trained:
        agreement(args.trained, args.threads)
    print(f"# load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
