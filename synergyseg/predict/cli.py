"""Segment images, folders, globs and videos with a trained model: class ids, colours, overlays.

Examples:
    python -m synergyseg.predict runs/synthetic photos/ --out predictions
    python -m synergyseg.predict export/synthetic/model_float32.tflite "shots/*.jpg" --out preds
    python -m synergyseg.predict runs/cityscapes drive.mp4 --out preds --opacity 0.6 --batch-size 8
    synergyseg-predict runs/cityscapes frames/ --out results --cityscapes-ids

MODEL is a train.py run folder, a .keras file, an exported SavedModel folder (or the export
folder holding it) or an exported .tflite file. Per image NAME it writes NAME_labels.png (class
ids), NAME_color.png, NAME_overlay.png and NAME_uncertainty.png (two-scale models, and exports
that serve it); per video NAME_overlay.mp4, printing its FPS. Existing outputs are kept unless
--overwrite. An export of only some outputs (export --outputs) works: without probabilities its
served class map is the result and --flip is refused.
"""

import argparse
import sys

from synergyseg.quiet import quiet_tensorflow

quiet_tensorflow()  # first: drops TensorFlow's start-up lines (a no-op once `import synergyseg` ran it)

from synergyseg.predict.files import DEFAULT_BATCH_SIZE, PredictOptions, predict_files  # noqa: E402
from synergyseg.predict.render import DEFAULT_OPACITY  # noqa: E402
from synergyseg.predict.segmenter import Segmenter  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m synergyseg.predict", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="MODEL",
                        help="run folder, .keras file, SavedModel folder or .tflite file")
    parser.add_argument("inputs", metavar="INPUT", nargs="+",
                        help="image or video files, folders (walked) or globs (quote them)")
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--opacity", type=float, default=DEFAULT_OPACITY,
                        help="weight of the colours in the overlay, 0..1 (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help="pictures per model call (same-size images, video frames; default %(default)s)")
    parser.add_argument("--cityscapes-ids", action="store_true",
                        help="write official Cityscapes label ids instead of train ids (19-class models)")
    parser.add_argument("--resize-factor", type=float,
                        help="run the model on pictures resized by this factor; results at full size")
    parser.add_argument("--flip", action="store_true", help="horizontal-flip test-time augmentation")
    parser.add_argument("--gated", type=float, metavar="FRACTION",
                        help="Keras models: the full-resolution pass only on this share of tiles, "
                             "where the low scale is least sure (e.g. 0.25)")
    parser.add_argument("--xla", action=argparse.BooleanOptionalAction, default=None,
                        help="XLA for .keras models (default: on where a GPU is visible)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def _describe_outputs(segmenter):
    """What a model without some outputs changes, said once (not per image)."""
    if not segmenter.has_probabilities:
        stride = segmenter.class_map_stride
        cells = (f" (taken at 1/{stride} of the size, repeated over {stride}x{stride} cells)"
                 if stride > 1 else "")
        print(f"No 'probabilities' output: the class maps are its 'class_map'{cells}")
    if not segmenter.two_scale:
        print("No 'uncertainty' output: no NAME_uncertainty.png is written")


def main(argv=None):
    args = parse_args(argv)
    options = PredictOptions(
        batch_size=args.batch_size, opacity=args.opacity, cityscapes_ids=args.cityscapes_ids,
        overwrite=args.overwrite, resize_factor=args.resize_factor, flip=args.flip,
        progress=not args.no_progress)
    try:
        segmenter = Segmenter(args.model, jit_compile=args.xla, gated=args.gated)
        print(f"Model: {segmenter.source} ({segmenter.form}, {segmenter.num_classes} classes"
              f"{', with uncertainty' if segmenter.two_scale else ''})")
        _describe_outputs(segmenter)
        summary = predict_files(segmenter, args.inputs, args.out, options)
    except (FileNotFoundError, NotADirectoryError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{summary['images']} image(s), {len(summary['videos'])} video(s) -> {args.out} "
          f"({len(summary['written'])} files written, {summary['skipped']} input(s) skipped)")
    return 0
