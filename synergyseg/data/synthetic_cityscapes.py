"""The synthetic scenes written in Cityscapes' official layout, to run the Cityscapes path end to end.

    <root>/leftImg8bit/<split>/<city>/<city>_000000_NNNNNN_leftImg8bit.png   (RGB)
    <root>/gtFine/<split>/<city>/<city>_000000_NNNNNN_gtFine_labelIds.png    (official label ids)

Labels are Cityscapes label ids (0..33), not train ids, so `datasets/cityscapes.py` converts them to
the 19 train ids as it would the real set. Like the real set, every image has the ego vehicle's
hood along its bottom rows (label id 1, ignored in training and scoring) and a one-pixel
rectification border (label id 2). A seed renders other scenes than the main job's set of the
same seed (`CITYSCAPES_SEED_OFFSET`).
"""

import os

import numpy as np
from PIL import Image

from synergyseg import atomic
from synergyseg.data.info import CITYSCAPES, CITYSCAPES_TRAIN_ID_TO_ID, SYNTHETIC
from synergyseg.data.synthetic import render_scene

EGO_VEHICLE_ID = 1  # cityscapesscripts labels.py: "ego vehicle"
RECTIFICATION_BORDER_ID = 2  # "rectification border"
CITIES = {"train": ("aachen", "bremen", "jena", "ulm"), "val": ("frankfurt", "lindau")}
# Added to the seed so these scenes are not the synthetic shards' scenes of the same seed.
CITYSCAPES_SEED_OFFSET = 1000
# Synthetic class index -> official label id (every synthetic class is a Cityscapes class).
SYNTHETIC_TO_LABEL_ID = np.array(
    [CITYSCAPES_TRAIN_ID_TO_ID[CITYSCAPES.class_names.index(name)] for name in SYNTHETIC.class_names],
    np.uint8)


def render(seed, height, width):
    """One scene in Cityscapes' encoding: `(image uint8 (h, w, 3), label ids uint8 (h, w))`."""
    image, label = render_scene(seed, height, width)
    ids = SYNTHETIC_TO_LABEL_ID[label]
    rng = np.random.default_rng(seed)
    # The hood: a dark, slightly lit curve over the bottom 6-12 % of the rows.
    x = np.linspace(-1.0, 1.0, width)
    top = height * (1.0 - rng.uniform(0.06, 0.12) * (1.0 - 0.5 * x ** 2))
    rows = np.arange(height)[:, None]
    hood = rows >= top[None, :]
    shade = 25 + 20 * np.clip((rows - top[None, :]) / (0.12 * height), 0, 1)
    image = image.copy()
    image[hood] = np.clip(shade[hood][:, None] + rng.uniform(0, 15, 3), 0, 255).astype(np.uint8)
    ids[hood] = EGO_VEHICLE_ID
    ids[[0, -1], :] = RECTIFICATION_BORDER_ID
    ids[:, [0, -1]] = RECTIFICATION_BORDER_ID
    return image, ids


def generate(root, *, num_train=400, num_val=50, height=256, width=512, seed=0, log=print):
    """Write `num_train` / `num_val` scenes under `root` in the official layout; returns `root`.

    The whole tree is staged beside `root` and moved into place at the end, so a killed run leaves
    no half-written set; an existing `root` is refused (the converter reads what is there).
    """
    root = os.fspath(root)
    if os.path.exists(root):
        raise FileExistsError(f"{root} exists: the Cityscapes-layout set is written to a new folder")
    with atomic.atomic_output(root) as staging:
        for split, split_id, count in (("train", 0, num_train), ("val", 1, num_val)):
            cities = CITIES[split]
            for i in range(count):
                city = cities[i % len(cities)]
                stem = f"{city}_000000_{i:06d}"
                image, ids = render((seed + CITYSCAPES_SEED_OFFSET, split_id, i), height, width)
                for sub, suffix, array in (("leftImg8bit", "_leftImg8bit.png", image),
                                           ("gtFine", "_gtFine_labelIds.png", ids)):
                    folder = os.path.join(staging, sub, split, city)
                    os.makedirs(folder, exist_ok=True)
                    Image.fromarray(array).save(os.path.join(folder, stem + suffix),
                                                compress_level=1)
    if log:
        log(f"wrote {num_train} train and {num_val} val scenes of {height}x{width} in the "
            f"Cityscapes layout under {root}")
    return root
