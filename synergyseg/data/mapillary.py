"""Mapillary Vistas v1.2 (or the v2.0 bundle's v1.2 labels) -> TFRecord shards of 65 scored classes.

Layouts:
    v1.2: `<root>/config.json`, `<root>/{training,validation}/images/*.jpg`, `.../labels/*.png`
    v2.0: `<root>/config_v1.2.json`, `<root>/{training,validation}/v1.2/labels/*.png`
Labels are palettized PNGs; TensorFlow's PNG decoder would return the palette colours
(tensorflow/tensorflow#28256), so they are read with Pillow and stored as single-channel index PNGs.
"""

import glob
import io
import json
import os

import numpy as np
from PIL import Image

from synergyseg.data import shards
from synergyseg.data.info import mapillary_id_table, mapillary_info
from synergyseg.data.tfrecord import encode_example


def find_config(root):
    """The v1.2 config of a Vistas root: `config.json` (v1.2) or `config_v1.2.json` (v2.0)."""
    for name in ("config.json", "config_v1.2.json"):
        path = os.path.join(root, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"no config.json or config_v1.2.json in Mapillary root {root}")


def find_pairs(root, split):
    """Sorted `(image, label)` paths of a split ("training" or "validation")."""
    image_dir = os.path.join(root, split, "images")
    label_dirs = [os.path.join(root, split, "labels"), os.path.join(root, split, "v1.2", "labels")]
    label_dir = next((d for d in label_dirs if os.path.isdir(d)), None)
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"Mapillary directory not found: {image_dir}")
    if label_dir is None:
        raise FileNotFoundError(f"Mapillary label directory not found: {label_dirs[0]} "
                                f"(v1.2) or {label_dirs[1]} (v2.0 bundle)")
    images = sorted(glob.glob(os.path.join(image_dir, "*.jpg")))
    if not images:
        raise FileNotFoundError(f"no *.jpg images in {image_dir}")
    pairs = []
    for image in images:
        label = os.path.join(label_dir, os.path.splitext(os.path.basename(image))[0] + ".png")
        if not os.path.isfile(label):
            raise FileNotFoundError(f"image {image} has no label: expected {label}")
        pairs.append((image, label))
    return pairs


def read_label_indices(path):
    """Label indices (H, W) uint8 of a palettized (or already single-channel) label PNG."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise ValueError(f"{path}: expected a palettized or single-channel label PNG, "
                                 f"got mode {im.mode!r}")
            im.load()  # decodes every row: a truncated file fails here
            # np.asarray of a "P" image gives the palette indices, which are the label ids.
            return np.asarray(im, np.uint8)
    except ValueError:
        raise
    except Exception as e:
        raise ValueError(f"{path}: cannot read label ({e})") from e


def known_indices(config_path):
    """A bool table per label index: True for the indices the Vistas config defines."""
    with open(config_path) as f:
        count = len(json.load(f)["labels"])
    return np.arange(256) < count


def _resized(image, label, max_short_side):
    """Shrink so the shorter side is at most `max_short_side`: image bilinear, label nearest."""
    width, height = image.size
    scale = max_short_side / min(width, height)
    if scale >= 1:
        return image, label, False
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    label = np.asarray(Image.fromarray(label).resize(size, Image.NEAREST))
    return image.resize(size, Image.BILINEAR), label, True


def encode_pair(item):
    """Shard-writer callback: `(image, label, id table, max_short_side[, known, strict])` ->
    (example, histogram, pixels whose index the config does not define).

    Unknown indices become 255 and are counted; with `strict` they raise an error naming the file.
    """
    image_path, label_path, table, max_short_side, *rest = item
    known = rest[0] if rest else np.ones(256, bool)
    strict = bool(rest[1]) if len(rest) > 1 else False
    try:
        image = Image.open(image_path)
        image.load()
    except Exception as e:
        raise ValueError(f"{image_path}: cannot read image ({e})") from e
    indices = read_label_indices(label_path)
    unknown = shards.count_unknown(indices, known, label_path, strict)
    if indices.shape != (image.height, image.width):
        raise ValueError(f"{label_path}: label size {indices.shape[1]}x{indices.shape[0]} "
                         f"differs from image {image_path} size {image.width}x{image.height}")
    label = table[indices]
    resized = False
    if max_short_side:
        image, label, resized = _resized(image, label, max_short_side)
    if resized or image.mode != "RGB":
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=95)
        image_bytes = buffer.getvalue()
    else:
        with open(image_path, "rb") as f:
            image_bytes = f.read()  # the original JPEG, byte for byte
    buffer = io.BytesIO()
    Image.fromarray(label).save(buffer, format="PNG")
    record = encode_example(image_bytes, buffer.getvalue(), filename=os.path.basename(image_path),
                            height=image.height, width=image.width, image_format="jpeg")
    return record, shards.label_histogram(label), unknown


def convert(root, out_dir, *, splits=("training", "validation"), max_short_side=None,
            num_shards=32, strict=False, workers=None, log=print):
    """Convert Vistas splits to shards named `train-...` and `val-...`; returns summaries.

    `max_short_side` (e.g. 1024) shrinks large images so their shorter side is at most that.
    A corrupt file raises ValueError naming it; label indices the config does not define are
    stored as 255 and counted (`strict`: refused).
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"Mapillary root not found: {root}")
    config = find_config(root)
    table, info = mapillary_id_table(config), mapillary_info(config)
    known = known_indices(config)
    # Same shard names as every other converter, so train.py needs one pattern per split.
    names = {"training": "train", "validation": "val"}
    # Find every pair first so a missing file fails before any work starts.
    pairs_by_split = {split: find_pairs(root, split) for split in splits}
    items = {names.get(split, split): [(image, label, table, max_short_side, known, strict)
                                       for image, label in pairs]
             for split, pairs in pairs_by_split.items()}
    return shards.write_splits(out_dir, items, encode_pair, num_shards=num_shards,
                               class_names=info.class_names, workers=workers,
                               parameters={"dataset": "mapillary", "root": os.path.abspath(root),
                                           "max_short_side": max_short_side,
                                           "strict": bool(strict)}, log=log)
