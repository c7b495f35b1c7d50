"""What evaluation needs to know of a model's classes: its output size and its dataset's names and colours."""

import colorsys
import json

from synergyseg.data import DatasetInfo
from synergyseg.data.info import NUM_CITYSCAPES_LABEL_IDS, info_for
from synergyseg.models.names import FUSED


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
