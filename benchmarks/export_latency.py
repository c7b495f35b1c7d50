"""Exported file sizes and TFLite latency (XNNPACK, 2 threads) next to the Keras model's.

    python benchmarks/export_latency.py --backbone resnet50 --size 256x512 --runs 5

Builds an untrained model (sizes and latency do not depend on the weights' values), exports the
SavedModel and TFLite float32/float16/int8 (int8 calibrated on 4 random images), and prints a
Markdown table for BENCHMARKS.md.
"""

import argparse
import os
import tempfile
import time

import numpy as np

import synergyseg
from synergyseg.export import (
    build_serving_model, convert_tflite, export_saved_model, make_interpreter, run_tflite)


def _median_ms(fn, runs):
    fn()  # warm-up: first call allocates / traces
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--size", default="256x512")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--num-classes", type=int, default=19)
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    model = synergyseg.build_synergyseg(args.num_classes, backbone=args.backbone)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8)
    serving = build_serving_model(model)
    rows = [("Keras (TF, float32)", sum(np.prod(v.shape) * 4 for v in model.variables),
             _median_ms(lambda: serving.predict_on_batch(image), args.runs))]
    with tempfile.TemporaryDirectory() as tmp:
        export_saved_model(model, os.path.join(tmp, "sm"))
        variables = os.path.join(tmp, "sm", "variables")
        rows.append(("SavedModel variables", sum(
            os.path.getsize(os.path.join(variables, f)) for f in os.listdir(variables)), None))
    calibration = [rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8) for _ in range(4)]
    for q in ("float32", "float16", "int8"):
        content = convert_tflite(model, (h, w), q, calibration if q == "int8" else None)
        interpreter = make_interpreter(model_content=content, num_threads=2)
        rows.append((f"TFLite {q}", len(content),
                     _median_ms(lambda: run_tflite(interpreter, image), args.runs)))
    print(f"| {args.backbone} {h}x{w} | size (MiB) | latency (ms, median of {args.runs}) |")
    print("| --- | ---: | ---: |")
    for name, size, ms in rows:
        print(f"| {name} | {size / 2**20:.1f} | {'-' if ms is None else f'{ms:.0f}'} |")


if __name__ == "__main__":
    main()
