"""Cityscapes benchmark result files: predictions as label-id PNGs named after their images.

The official evaluation (`cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling`) and the
test server look for one single-channel PNG per image whose name starts with
`<city>_<sequence>_<frame>` and whose pixels are the 34 official label ids (not train ids).
Files are written as `DIR/<city>/<city>_<sequence>_<frame>_leftImg8bit.png`.
"""

import os
import re

import numpy as np
from PIL import Image

from synergyseg.atomic import atomic_output
from synergyseg.data import CITYSCAPES_TRAIN_ID_TO_ID

_FRAME = re.compile(r"([a-z][a-z-]*)_(\d{6})_(\d{6})")


def train_ids_to_label_ids(prediction):
    """Maps a (H, W) map of train ids 0..18 to the official label ids (uint8)."""
    prediction = np.asarray(prediction)
    if prediction.size and (prediction.min() < 0 or prediction.max() >= len(CITYSCAPES_TRAIN_ID_TO_ID)):
        raise ValueError(
            f"Cityscapes predictions must be train ids 0..{len(CITYSCAPES_TRAIN_ID_TO_ID) - 1}, "
            f"got values {prediction.min()}..{prediction.max()}")
    return CITYSCAPES_TRAIN_ID_TO_ID[prediction]


def result_path(out_dir, filename):
    """Where the result for image `filename` (e.g. `frankfurt_000000_000294_leftImg8bit.png`) goes."""
    match = _FRAME.search(os.path.basename(filename))
    if match is None:
        raise ValueError(
            f"image file name {filename!r} does not contain <city>_<sequence>_<frame> "
            "(e.g. frankfurt_000000_000294); Cityscapes result files are named after it")
    city, sequence, frame = match.groups()
    return os.path.join(out_dir, city, f"{city}_{sequence}_{frame}_leftImg8bit.png")


def write_result(out_dir, filename, prediction):
    """Writes one prediction (train ids, (H, W)) as a label-id PNG; returns its path."""
    path = result_path(out_dir, filename)
    with atomic_output(path) as tmp:
        Image.fromarray(train_ids_to_label_ids(prediction)).save(tmp, format="PNG")
    return path


class CityscapesResultWriter:
    """An evaluation visitor that writes the model's predictions as Cityscapes result files."""

    def __init__(self, out_dir, key="model"):
        self.out_dir = out_dir
        self.key = key
        self.written = []

    def __call__(self, images, labels, predictions, filenames):
        if filenames is None:
            raise ValueError("Cityscapes result files need each image's file name; the batches have none")
        for name, prediction in zip(filenames, predictions[self.key]):
            self.written.append(write_result(self.out_dir, name, prediction))
