"""Command line for `export_model`: a trained model (run folder or .keras) -> SavedModel, TFLite, ONNX.

Examples:
    python -m synergyseg.export runs/synthetic --out export/synthetic --tflite-size 256x512 \\
        --calibration "data/synthetic/val-*.tfrecord"
    python -m synergyseg.export runs/cityscapes/best.keras --out export/cityscapes \\
        --formats saved_model,onnx
    python -m synergyseg.export runs/cityscapes --out export/cs --formats tflite \\
        --tflite-size 512x1024 --quantizations float32,float16
    python -m synergyseg.export runs/cityscapes --out export/realtime --formats tflite \\
        --tflite-size 512x1024 --quantizations float32 --outputs class_map --class-map-stride 4
"""

import argparse
import sys

from synergyseg.export.artifacts import DEFAULT_CALIBRATION_IMAGES, FORMATS, export_model
from synergyseg.export.serving import SERVING_OUTPUTS
from synergyseg.export.tflite import QUANTIZATIONS
from synergyseg.arguments import image_size


def _choices(allowed):
    def parse(text):
        values = tuple(v.strip() for v in text.split(",") if v.strip())
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated subset of {','.join(allowed)}, got {text!r}")
        return values
    return parse


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m synergyseg.export", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a .keras file or a train.py run folder (best.keras, else final.keras)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--formats", type=_choices(FORMATS), default=FORMATS,
                        help=f"comma-separated, default {','.join(FORMATS)}")
    parser.add_argument("--tflite-size", type=image_size,
                        help="TFLite input HEIGHTxWIDTH (any size from 32x32, odd too)")
    parser.add_argument("--quantizations", type=_choices(QUANTIZATIONS), default=QUANTIZATIONS,
                        help=f"TFLite variants, default {','.join(QUANTIZATIONS)}")
    parser.add_argument("--calibration",
                        help="glob of TFRecord shards whose images calibrate the int8 TFLite")
    parser.add_argument("--calibration-images", type=int, default=DEFAULT_CALIBRATION_IMAGES,
                        help="images read for int8 calibration (default %(default)s)")
    parser.add_argument("--outputs", type=_choices(SERVING_OUTPUTS), default=SERVING_OUTPUTS,
                        help=f"outputs of every artifact, default {','.join(SERVING_OUTPUTS)}")
    parser.add_argument("--class-map-stride", type=int, default=1,
                        help="take the class map at 1/N of the image size and repeat it over NxN "
                             "pixels: faster, differs only near class boundaries (models fused "
                             "at the decoder; default %(default)s: the exact full-size argmax)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        written = export_model(
            args.model, args.out, formats=args.formats, tflite_size=args.tflite_size,
            quantizations=args.quantizations, calibration=args.calibration,
            num_calibration_images=args.calibration_images, outputs=args.outputs,
            class_map_stride=args.class_map_stride)
    except (FileNotFoundError, NotADirectoryError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for artifact, path in written.items():
        print(f"{artifact}: {path}")
    return 0
