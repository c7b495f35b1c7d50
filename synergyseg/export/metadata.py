"""The export folder's metadata.json: what the artifacts beside it predict (class names, colours).

A SavedModel or TFLite file holds only the serving graph; this small file lets a reader colour
its class map and name its classes without the training run. `export_model` writes it, and
`read_metadata` is how every reader (e.g. `synergyseg.Segmenter`) finds it beside an artifact.

    {"num_classes": 10, "class_names": ["road", ...], "palette": [[128, 64, 128], ...],
     "source": "/abs/runs/synthetic/best.keras", "tflite_size": [256, 512],
     "outputs": ["class_map", "probabilities", "uncertainty"], "class_map_stride": 1}

"outputs" names the artifacts' outputs; "class_map_stride" above 1 means their class map was
taken at 1/stride of the image size and repeated over stride x stride cells
(`build_serving_model`), not the argmax of the full-size probabilities. Files written before
these two keys existed read as all outputs and stride 1.
"""

import json
import os

from synergyseg.atomic import write_json
from synergyseg.export.serving import SERVING_OUTPUTS

METADATA_NAME = "metadata.json"


def metadata(model, class_names=None, palette=None, source=None, tflite_size=None,
             outputs=SERVING_OUTPUTS, class_map_stride=1):
    """The metadata dict of an export of `model` (a SynergySeg), names/colours from it unless given.

    `outputs` and `class_map_stride` are the serving options the artifacts were built with.
    """
    class_names = class_names if class_names is not None else getattr(model, "class_names", None)
    palette = palette if palette is not None else getattr(model, "palette", None)
    return {
        "num_classes": int(model.num_classes),
        "class_names": list(class_names) if class_names is not None else None,
        "palette": [[int(v) for v in c] for c in palette] if palette is not None else None,
        "source": os.path.abspath(source) if isinstance(source, (str, os.PathLike)) else None,
        "tflite_size": list(tflite_size) if tflite_size is not None else None,
        "outputs": list(outputs),
        "class_map_stride": int(class_map_stride),
    }


def write_metadata(path, values):
    """Writes a `metadata(...)` dict to `path` (atomically); returns `path`."""
    return write_json(path, values)


def metadata_path(artifact):
    """Where an artifact's metadata.json is: in its folder (export/saved_model -> export/metadata.json)."""
    return os.path.join(os.path.dirname(os.path.abspath(os.fspath(artifact))), METADATA_NAME)


def read_metadata(artifact):
    """The metadata dict beside `artifact` (a SavedModel folder or .tflite file), or None if absent.

    "outputs" and "class_map_stride" are filled in (all outputs, 1) for files written without
    them. Raises ValueError naming the file when it exists but is not this module's JSON.
    """
    path = metadata_path(artifact)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
        num_classes = int(values["num_classes"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not an export metadata file (expected JSON with num_classes): {e}") \
            from e
    for key in ("class_names", "palette"):
        if values.get(key) is not None and len(values[key]) != num_classes:
            raise ValueError(f"{path}: {len(values[key])} {key} for num_classes={num_classes}")
    values.setdefault("outputs", list(SERVING_OUTPUTS))
    values.setdefault("class_map_stride", 1)
    stride = values["class_map_stride"]
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"{path}: class_map_stride must be a positive integer, got {stride!r}")
    outputs = values["outputs"]
    if not isinstance(outputs, list) or any(name not in SERVING_OUTPUTS for name in outputs):
        raise ValueError(f"{path}: outputs must be a list of names of {SERVING_OUTPUTS}, got "
                         f"{outputs!r}")
    return values
