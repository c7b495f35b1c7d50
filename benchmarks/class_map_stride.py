"""What a strided class map costs in accuracy: validation mIoU of the exact and the strided class maps.

    python benchmarks/class_map_stride.py runs/realtime --strides 1 2 4 8

The served class map can be taken at 1/stride of the image size on a decoder-fused model's grid
(`build_serving_model(class_map_stride=S)`, `python -m synergyseg.export --class-map-stride S`),
which is faster on CPUs (BENCHMARKS.md "Real-time model"). This scores each stride's class map,
computed by the Keras serving model, on the run's validation shards against the labels (label
255 ignored), and the share of pixels where it equals the exact (stride 1) map. Writes
benchmarks/results/class_map_stride.json (--out to change).
"""

import argparse
import datetime
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from synergyseg.atomic import write_json  # noqa: E402
from synergyseg.data import eval_dataset  # noqa: E402
from synergyseg.export import build_serving_model  # noqa: E402
from synergyseg.run_folder import RunFolder, load_model, resolve_model_path  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "results", "class_map_stride.json")


def mean_iou(confusion):
    """Per-class IoU and their mean over classes present in labels or predictions."""
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    return float(np.nanmean(iou)), iou


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a run folder of a decoder-fused model (its final.keras)")
    p.add_argument("--data", default=None, help="validation shards glob (default: the run's data_dir/val-*)")
    p.add_argument("--strides", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--out", default=RESULTS)
    args = p.parse_args(argv)
    final = os.path.join(args.run, "final.keras")
    path = final if os.path.isfile(final) else resolve_model_path(args.run)
    model = load_model(path)
    data = args.data or os.path.join(RunFolder(args.run).config().data_dir, "val-*.tfrecord")
    num_classes = model.output.shape[-1] if not isinstance(model.output, dict) else model.output["fused"].shape[-1]
    servings = {s: build_serving_model(model, outputs=("class_map",), class_map_stride=s) for s in args.strides}
    confusion = {s: np.zeros((num_classes, num_classes), np.int64) for s in args.strides}
    same = {s: 0 for s in args.strides}
    pixels = 0
    for image, label in eval_dataset(data):
        image = np.clip(np.round(np.asarray(image)), 0, 255).astype(np.uint8)
        label = np.asarray(label)[0, ..., 0] if np.asarray(label).ndim == 4 else np.asarray(label)[0]
        maps = {s: np.asarray(serving(image)["class_map"])[0] for s, serving in servings.items()}
        exact = maps[min(args.strides)]
        keep = label != 255
        pixels += exact.size
        for s, m in maps.items():
            same[s] += int((m == exact).sum())
            confusion[s] += np.bincount(label[keep] * num_classes + m[keep],
                                        minlength=num_classes ** 2).reshape(num_classes, num_classes)
    rows = []
    for s in args.strides:
        miou, _ = mean_iou(confusion[s])
        rows.append({"class_map_stride": s, "mean_iou": miou, "agreement_with_smallest_stride": same[s] / pixels})
        print(f"stride {s}: mIoU {100 * miou:.2f}, pixels equal to stride {min(args.strides)}: {100 * same[s] / pixels:.2f}%")
    write_json(args.out, {"command": " ".join([os.path.basename(sys.executable)] + sys.argv),
                          "date": datetime.datetime.now().isoformat(timespec="seconds"),
                          "model": path, "data": data, "rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
