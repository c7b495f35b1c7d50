"""A TFDS-prepared Cityscapes feeds our pipeline with the same label mapping: build
`cityscapes/semantic_segmentation` offline from two zips in the official layout."""

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from synergyseg import data
from synergyseg.data import synthetic

pytest.importorskip("tensorflow_datasets")

# TFDS's Cityscapes builder declares fixed 1024x2048 images, so the scenes must be that size.
HEIGHT, WIDTH = 1024, 2048


def _png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _cityscapes_label_ids(label):
    """Synthetic class -> Cityscapes train id (by name) -> official label id."""
    train_ids = np.array([data.CITYSCAPES.class_names.index(n)
                          for n in data.SYNTHETIC.class_names])
    return data.CITYSCAPES_TRAIN_ID_TO_ID[train_ids[label]]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfds")
    manual, data_dir = root / "manual", root / "data"
    manual.mkdir()
    scenes = {}
    with zipfile.ZipFile(manual / "leftImg8bit_trainvaltest.zip", "w") as images, \
            zipfile.ZipFile(manual / "gtFine_trainvaltest.zip", "w") as labels:
        for split, seed in (("train", 0), ("val", 1)):
            image, label = synthetic.render_scene(seed, HEIGHT, WIDTH)
            image_png, label_png = _png(image), _png(_cityscapes_label_ids(label))
            # The builder requires a test split too; it reuses the val scene's files.
            for name in (split, "test") if split == "val" else (split,):
                stem = f"{name}/bonn/bonn_000000_00000{seed}"
                images.writestr(f"leftImg8bit/{stem}_leftImg8bit.png", image_png)
                labels.writestr(f"gtFine/{stem}_gtFine_labelIds.png", label_png)
            scenes[split] = image, label
    data.prepare_tfds_cityscapes(str(manual), str(data_dir))
    return str(data_dir), scenes


def test_tfds_validation_gives_train_ids_at_full_size(prepared):
    data_dir, scenes = prepared
    (image, label), = list(data.tfds_cityscapes("validation", 1, data_dir=data_dir))
    want_image, want_label = scenes["val"]
    np.testing.assert_array_equal(image[0].numpy(), want_image.astype(np.float32))
    train_ids = np.array([data.CITYSCAPES.class_names.index(n)
                          for n in data.SYNTHETIC.class_names])
    np.testing.assert_array_equal(label[0].numpy(), train_ids[want_label])


def test_tfds_train_is_augmented_and_cropped(prepared):
    data_dir, _ = prepared
    ds = data.tfds_cityscapes("train", 1, data_dir=data_dir, crop_size=(128, 256), seed=0,
                              jitter=True)
    first = [(i.numpy(), l.numpy()) for i, l in ds]
    again = [(i.numpy(), l.numpy()) for i, l in data.tfds_cityscapes(
        "train", 1, data_dir=data_dir, crop_size=(128, 256), seed=0, jitter=True)]
    image, label = first[0]
    assert image.shape == (1, 128, 256, 3) and label.shape == (1, 128, 256)
    np.testing.assert_array_equal(image, again[0][0])
    # Only Cityscapes train ids of the synthetic classes (or 255 padding) appear.
    allowed = {data.CITYSCAPES.class_names.index(n) for n in data.SYNTHETIC.class_names} | {255}
    assert set(np.unique(label)) <= allowed
