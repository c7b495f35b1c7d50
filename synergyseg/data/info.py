"""Dataset metadata: class names, colours and label-id tables for each supported dataset."""

import dataclasses
import json
import os

import numpy as np

IGNORE_LABEL = 255
# ImageNet's per-channel mean in RGB order, as keras.applications.resnet50.preprocess_input
# ("caffe" mode) subtracts it: the model's input normalization and the training crops' padding.
IMAGENET_MEAN_RGB = (123.68, 116.779, 103.939)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model and its evaluation need to know about a dataset's classes.

    Args:
        name: short dataset name, e.g. "cityscapes".
        num_classes: number of scored classes; labels are 0..num_classes-1.
        class_names: one name per class, in label order.
        colors: one RGB tuple per class, for visualisation.
        ignore_label: label value that is never scored (255 everywhere in synergyseg).
    """

    name: str
    num_classes: int
    class_names: tuple
    colors: tuple
    ignore_label: int = IGNORE_LABEL

    def __post_init__(self):
        if len(self.class_names) != self.num_classes or len(self.colors) != self.num_classes:
            raise ValueError(
                f"DatasetInfo {self.name!r}: num_classes={self.num_classes} but got "
                f"{len(self.class_names)} class_names and {len(self.colors)} colors")


# The official Cityscapes table (cityscapesscripts/helpers/labels.py): label id -> train id.
# Ids whose class is not scored (ignoreInEval) map to 255; tests/test_data_cityscapes.py checks
# this against the official package.
_CITYSCAPES_TRAIN_IDS = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
NUM_CITYSCAPES_LABEL_IDS = 34


def colorize(label_map, colors, ignore_label=IGNORE_LABEL):
    """(H, W) class ids -> (H, W, 3) uint8 RGB with a dataset's palette; ignore and unknown ids -> black."""
    palette = np.zeros((256, 3), np.uint8)
    palette[: len(colors)] = np.asarray(colors, np.uint8)
    palette[ignore_label] = 0
    return palette[np.asarray(label_map, np.int64).clip(0, 255)]


def lookup_table(label_map):
    """A 256-entry uint8 table from `label_map` (sequence or dict id -> id); unlisted ids -> 255.

    255 always maps to 255: ignored pixels stay ignored whatever the map says.
    """
    table = np.full(256, IGNORE_LABEL, np.uint8)
    items = label_map.items() if isinstance(label_map, dict) else enumerate(np.asarray(label_map))
    for src, dst in items:
        if not (0 <= int(src) < 256 and 0 <= int(dst) <= IGNORE_LABEL):
            raise ValueError(f"label_map entry {int(src)} -> {int(dst)} is outside 0..255")
        table[int(src)] = int(dst)
    table[IGNORE_LABEL] = IGNORE_LABEL
    return table


# 256 entries so any uint8 label can be looked up; ids 34..255 (not used by Cityscapes) -> 255.
CITYSCAPES_ID_TO_TRAIN_ID = lookup_table(_CITYSCAPES_TRAIN_IDS)
# Train id -> official label id, for benchmark submissions (which expect label ids).
CITYSCAPES_TRAIN_ID_TO_ID = np.array(
    [src for src, _ in sorted(_CITYSCAPES_TRAIN_IDS.items(), key=lambda kv: kv[1])], np.uint8)

CITYSCAPES = DatasetInfo(
    name="cityscapes",
    num_classes=19,
    class_names=(
        "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
        "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
        "bus", "train", "motorcycle", "bicycle"),
    colors=(
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
        (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
        (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
        (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32)),
)

# A Cityscapes-like subset, in the synthetic generator's label order (see synthetic.py).
SYNTHETIC = DatasetInfo(
    name="synthetic",
    num_classes=10,
    class_names=(
        "road", "sidewalk", "building", "pole", "traffic sign", "vegetation", "sky",
        "person", "car", "truck"),
    colors=(
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (153, 153, 153), (220, 220, 0),
        (107, 142, 35), (70, 130, 180), (220, 20, 60), (0, 0, 142), (0, 0, 70)),
)


def _read_mapillary_config(config_path):
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"Mapillary config not found: {config_path}")
    with open(config_path) as f:
        try:
            labels = json.load(f)["labels"]
        except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(
                f"{config_path}: expected a Mapillary Vistas config with a 'labels' list ({e})")
    if len(labels) > IGNORE_LABEL:
        raise ValueError(f"{config_path}: {len(labels)} labels do not fit below {IGNORE_LABEL}")
    return labels


def mapillary_id_table(config_path):
    """Mapillary label index -> train id: scored labels keep their order, `evaluate: false` -> 255."""
    labels = _read_mapillary_config(config_path)
    scored = [i for i, label in enumerate(labels) if label.get("evaluate", True)]
    return lookup_table({src: dst for dst, src in enumerate(scored)})


def mapillary_info(config_path):
    """DatasetInfo for the scored labels of a Mapillary Vistas `config.json` (v1.2: 65 classes)."""
    labels = _read_mapillary_config(config_path)
    scored = [label for label in labels if label.get("evaluate", True)]
    return DatasetInfo(
        name="mapillary",
        num_classes=len(scored),
        class_names=tuple(label.get("readable", label["name"]) for label in scored),
        colors=tuple(tuple(int(c) for c in label["color"]) for label in scored),
    )


DATASETS = ("synthetic", "cityscapes", "mapillary")


def info_for(dataset, mapillary_config=None):
    """The `DatasetInfo` of a dataset name; Mapillary's comes from its `config.json`."""
    if dataset == "synthetic":
        return SYNTHETIC
    if dataset == "cityscapes":
        return CITYSCAPES
    if dataset == "mapillary":
        if not mapillary_config:
            raise ValueError("dataset 'mapillary' needs the Mapillary config.json (--mapillary-config)")
        return mapillary_info(mapillary_config)
    raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
