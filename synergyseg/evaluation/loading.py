"""What evaluation needs from a run folder or a `.keras` file: the model, its dataset and its data."""

import colorsys
import glob
import json
import os

import synergyseg  # noqa: F401  (registers the custom layers before a model is loaded)
from synergyseg.data import DatasetInfo
from synergyseg.data.info import NUM_CITYSCAPES_LABEL_IDS, info_for
from synergyseg.run_folder import resolve_model_path
from synergyseg.models.names import FUSED

def resolve_model(run_or_model):
    """`(model_path, config dict or None)` for a run folder (best.keras, else final.keras) or a `.keras` file."""
    model_path = resolve_model_path(run_or_model)
    # A model inside a run folder still has that run's config beside it.
    return model_path, read_config(os.path.join(os.path.dirname(os.path.abspath(model_path)), "config.json"))


def read_config(path):
    """The run's config.json as a dict, or None if there is none."""
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from e


def num_outputs(model):
    """Number of classes a segmentation model predicts (its output's last axis)."""
    shape = model.output_shape
    if isinstance(shape, dict):
        shape = shape[FUSED]
    return int(shape[-1])


def generic_info(num_classes):
    """Class names "class_0".. and an evenly spread hue palette, for data with no known dataset."""
    colors = tuple(tuple(int(255 * c) for c in colorsys.hsv_to_rgb(i / num_classes, 0.75, 0.9))
                   for i in range(num_classes))
    return DatasetInfo("unknown", num_classes, tuple(f"class_{i}" for i in range(num_classes)), colors)


def dataset_info(dataset, num_classes, mapillary_config=None):
    """`(DatasetInfo, number of label values in the source data)` for a dataset name.

    The second number is what the paper's tables state beside the scored classes: Cityscapes has
    34 label ids of which 19 are scored, Mapillary Vistas v1.2 66 labels of which 65 are scored.
    """
    if dataset in (None, "", "unknown"):
        info = generic_info(num_classes)
    else:
        info = info_for(dataset, mapillary_config)
    if dataset == "cityscapes":
        labels = NUM_CITYSCAPES_LABEL_IDS
    elif dataset == "mapillary":
        with open(mapillary_config) as f:
            labels = len(json.load(f)["labels"])
    else:
        labels = info.num_classes
    if info.num_classes != num_classes:
        raise ValueError(
            f"the model predicts {num_classes} classes but dataset {dataset!r} has {info.num_classes}; "
            "pass the dataset the model was trained on (--dataset)")
    return info, labels


def validation_pattern(config):
    """The run's validation TFRecord glob from its config (val_pattern, else data_dir/val-*)."""
    if not config:
        return None
    pattern = config.get("val_pattern")
    data_dir = config.get("data_dir")
    if pattern and not glob.glob(pattern) and data_dir and not os.path.isabs(pattern):
        pattern = os.path.join(data_dir, pattern)
    if not pattern and data_dir:
        pattern = os.path.join(data_dir, "val-*.tfrecord")
    return pattern
