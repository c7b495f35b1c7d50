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
# The official label ids are 0..33 (cityscapesScripts labels.py); others are not Cityscapes ids.
_KNOWN_IDS = np.arange(256) < 34


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
    """Shard-writer callback: `(image, labelIds[, "png" | "jpeg"[, strict]])` -> (example,
    histogram, pixels with ids outside 0..33).

    PNG images are stored byte for byte; "jpeg" re-encodes them at quality 95, which decodes
    several times faster (see BENCHMARKS.md) at the cost of lossy images. Every image is decoded
    once here, so a truncated or corrupt file fails now, named, not later in training. Ids above
    255 are refused; ids 34..254 are stored as 255 and counted (`strict`: refused).
    """
    image_path, label_path, *rest = item
    image_format = rest[0] if rest else "png"
    strict = bool(rest[1]) if len(rest) > 1 else False
    with open(image_path, "rb") as f:
        image_bytes = f.read()
    try:
        with Image.open(io.BytesIO(image_bytes)) as im:
            im.load()  # decodes every row: a truncated file fails here
            width, height = im.size
            if image_format == "jpeg":
                buffer = io.BytesIO()
                im.convert("RGB").save(buffer, format="JPEG", quality=95)
                image_bytes = buffer.getvalue()
    except Exception as e:
        raise ValueError(f"{image_path}: cannot read image ({e})") from e
    try:
        with Image.open(label_path) as lb:
            lb.load()
            label_ids = np.asarray(lb)
    except Exception as e:
        raise ValueError(f"{label_path}: cannot read label ({e})") from e
    if label_ids.ndim != 2:
        raise ValueError(f"{label_path}: expected a single-channel labelIds PNG, "
                         f"got shape {label_ids.shape}")
    if label_ids.size and (label_ids.min() < 0 or label_ids.max() > 255):
        # A 16-bit PNG: casting to uint8 would wrap id 263 to 7 (road) without a word.
        raise ValueError(f"{label_path}: holds label id {int(label_ids.max())}; Cityscapes "
                         "labelIds are 0..33 (8-bit PNG)")
    label_ids = label_ids.astype(np.uint8)
    unknown = shards.count_unknown(label_ids, _KNOWN_IDS, label_path, strict)
    if label_ids.shape != (height, width):
        raise ValueError(f"{label_path}: label size {label_ids.shape[1]}x{label_ids.shape[0]} "
                         f"differs from image {image_path} size {width}x{height}")
    label = CITYSCAPES_ID_TO_TRAIN_ID[label_ids]
    buffer = io.BytesIO()
    Image.fromarray(label).save(buffer, format="PNG")
    record = encode_example(image_bytes, buffer.getvalue(), filename=os.path.basename(image_path),
                            height=height, width=width, image_format=image_format)
    return record, shards.label_histogram(label), unknown


def convert(root, out_dir, *, splits=("train", "val"), num_shards=16, image_format="png",
            strict=False, workers=None, log=print):
    """Convert Cityscapes splits into shards `<split>-XXXXX-of-YYYYY.tfrecord`; returns summaries.

    A corrupt image or label raises ValueError naming the file (finished shards stay, and a rerun
    resumes); `strict` also refuses label ids outside 0..33 instead of storing them as 255.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"Cityscapes root not found: {root}")
    # Find every pair first so a missing file fails before any work starts.
    pairs_by_split = {split: find_pairs(root, split) for split in splits}
    items = {split: [(image, label, image_format, strict) for image, label in pairs]
             for split, pairs in pairs_by_split.items()}
    return shards.write_splits(out_dir, items, encode_pair, num_shards=num_shards,
                               class_names=CITYSCAPES.class_names, workers=workers,
                               parameters={"dataset": "cityscapes", "root": os.path.abspath(root),
                                           "image_format": image_format,
                                           "strict": bool(strict)}, log=log)
