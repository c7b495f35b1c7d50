"""Cityscapes in its official layout -> TFRecord shards with the 19 train ids (others 255).

Layout: `<root>/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png` with labels at
`<root>/gtFine/<split>/<city>/<name>_gtFine_labelIds.png` (34 official label ids).
"""

import glob
import io
import os

import numpy as np
from PIL import Image

from synergyseg.data import shards
from synergyseg.data.info import CITYSCAPES, CITYSCAPES_ID_TO_TRAIN_ID
from synergyseg.data.tfrecord import encode_example

_IMAGE_SUFFIX = "_leftImg8bit.png"
_LABEL_SUFFIX = "_gtFine_labelIds.png"


def find_pairs(root, split):
    """Sorted `(image, label)` paths of a split; errors name a missing directory or label."""
    image_dir = os.path.join(root, "leftImg8bit", split)
    label_dir = os.path.join(root, "gtFine", split)
    for d in (image_dir, label_dir):
        if not os.path.isdir(d):
            raise FileNotFoundError(f"Cityscapes directory not found: {d} (expected the official "
                                    f"layout leftImg8bit/{split}/<city>/, gtFine/{split}/<city>/)")
    images = sorted(glob.glob(os.path.join(image_dir, "*", "*" + _IMAGE_SUFFIX)))
    if not images:
        raise FileNotFoundError(f"no *{_IMAGE_SUFFIX} images under {image_dir}/<city>/")
    pairs = []
    for image in images:
        city = os.path.basename(os.path.dirname(image))
        stem = os.path.basename(image)[:-len(_IMAGE_SUFFIX)]
        label = os.path.join(label_dir, city, stem + _LABEL_SUFFIX)
        if not os.path.isfile(label):
            raise FileNotFoundError(f"image {image} has no label: expected {label}")
        pairs.append((image, label))
    return pairs


def encode_pair(item):
    """Shard-writer callback: `(image path, labelIds path[, "png" | "jpeg"])` -> (example, histogram).

    PNG images are stored byte for byte; "jpeg" re-encodes them at quality 95, which decodes
    several times faster (see BENCHMARKS.md) at the cost of lossy images.
    """
    image_path, label_path, image_format = (tuple(item) + ("png",))[:3]
    with open(image_path, "rb") as f:
        image_bytes = f.read()
    try:
        with Image.open(io.BytesIO(image_bytes)) as im:
            width, height = im.size
            if image_format == "jpeg":
                buffer = io.BytesIO()
                im.convert("RGB").save(buffer, format="JPEG", quality=95)
                image_bytes = buffer.getvalue()
    except Exception as e:
        raise ValueError(f"{image_path}: cannot read image ({e})") from e
    try:
        with Image.open(label_path) as lb:
            label_ids = np.asarray(lb)
    except Exception as e:
        raise ValueError(f"{label_path}: cannot read label ({e})") from e
    if label_ids.ndim != 2:
        raise ValueError(f"{label_path}: expected a single-channel labelIds PNG, "
                         f"got shape {label_ids.shape}")
    if label_ids.shape != (height, width):
        raise ValueError(f"{label_path}: label size {label_ids.shape[1]}x{label_ids.shape[0]} "
                         f"differs from image {image_path} size {width}x{height}")
    label = CITYSCAPES_ID_TO_TRAIN_ID[label_ids.astype(np.uint8)]
    buffer = io.BytesIO()
    Image.fromarray(label).save(buffer, format="PNG")
    record = encode_example(image_bytes, buffer.getvalue(), filename=os.path.basename(image_path),
                            height=height, width=width, image_format=image_format)
    return record, shards.label_histogram(label)


def convert(root, out_dir, *, splits=("train", "val"), num_shards=16, image_format="png",
            workers=None, log=print):
    """Convert Cityscapes splits into shards `<split>-XXXXX-of-YYYYY.tfrecord`; returns summaries."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"Cityscapes root not found: {root}")
    # Find every pair first so a missing file fails before any work starts.
    pairs_by_split = {split: find_pairs(root, split) for split in splits}
    items = {split: [(image, label, image_format) for image, label in pairs]
             for split, pairs in pairs_by_split.items()}
    return shards.write_splits(out_dir, items, encode_pair, num_shards=num_shards,
                               class_names=CITYSCAPES.class_names, workers=workers, log=log)
