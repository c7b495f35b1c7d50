"""Cityscapes: our label tables against the official cityscapesscripts, and the converter."""

import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from synergyseg import data
from synergyseg.data import cityscapes


@pytest.fixture(scope="module")
def labels():
    """The official label table; only the tests that compare with it need cityscapesscripts."""
    return pytest.importorskip("cityscapesscripts.helpers.labels")


def test_id_to_train_id_matches_official_labels(labels):
    for label in labels.labels:
        if label.id < 0:
            continue  # license plate: -1, never in labelIds PNGs
        want = 255 if label.trainId in (-1, 255) else label.trainId
        assert data.CITYSCAPES_ID_TO_TRAIN_ID[label.id] == want, label.name
    assert (data.CITYSCAPES_ID_TO_TRAIN_ID[34:] == 255).all()


def test_names_colors_and_inverse_table_match_official_labels(labels):
    assert data.CITYSCAPES.num_classes == 19
    for train_id in range(19):
        official = labels.trainId2label[train_id]
        assert data.CITYSCAPES.class_names[train_id] == official.name
        assert data.CITYSCAPES.colors[train_id] == official.color
        assert data.CITYSCAPES_TRAIN_ID_TO_ID[train_id] == official.id
    np.testing.assert_array_equal(
        data.CITYSCAPES_ID_TO_TRAIN_ID[data.CITYSCAPES_TRAIN_ID_TO_ID], np.arange(19))


def _write_city(root, split, city, stem, size=(12, 20), seed=0, label_size=None):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size + (3,), dtype=np.uint8)
    ids = rng.integers(0, 34, label_size or size, dtype=np.uint8)
    for sub, suffix, array in (("leftImg8bit", "_leftImg8bit.png", image),
                               ("gtFine", "_gtFine_labelIds.png", ids)):
        directory = os.path.join(root, sub, split, city)
        os.makedirs(directory, exist_ok=True)
        Image.fromarray(array).save(os.path.join(directory, stem + suffix))
    return image, ids


def test_convert_official_layout(tmp_path):
    root, out = str(tmp_path / "cityscapes"), str(tmp_path / "out")
    want = [_write_city(root, "val", city, f"{city}_000000_00000{i}", seed=i)
            for i, city in enumerate(["frankfurt", "lindau", "munster"])]
    summary = cityscapes.convert(root, out, splits=("val",), num_shards=2, workers=1, log=None)
    assert summary["val"].images == 3
    ignored = sum(int((data.CITYSCAPES_ID_TO_TRAIN_ID[ids] == 255).sum()) for _, ids in want)
    assert summary["val"].pixel_counts[255] == ignored
    got = list(data.eval_dataset(os.path.join(out, "val-*.tfrecord")))
    # Shard 0 holds pairs 0 and 2, shard 1 pair 1 (items are dealt round-robin).
    for (image, label), (want_image, ids) in zip(got, [want[0], want[2], want[1]]):
        np.testing.assert_array_equal(image[0].numpy(), want_image)
        np.testing.assert_array_equal(label[0].numpy(), data.CITYSCAPES_ID_TO_TRAIN_ID[ids])


def test_bad_input_names_the_file(tmp_path):
    root = str(tmp_path / "cityscapes")
    with pytest.raises(FileNotFoundError, match="leftImg8bit/train"):
        _write_city(root, "val", "aachen", "aachen_000000_000000")
        cityscapes.find_pairs(root, "train")
    os.remove(os.path.join(root, "gtFine", "val", "aachen", "aachen_000000_000000_gtFine_labelIds.png"))
    with pytest.raises(FileNotFoundError, match="aachen_000000_000000_gtFine_labelIds.png"):
        cityscapes.find_pairs(root, "val")
    _write_city(root, "val", "aachen", "aachen_000000_000000", label_size=(12, 18))
    pair = cityscapes.find_pairs(root, "val")[0]
    with pytest.raises(ValueError, match="labelIds.png: label size 18x12 differs from image"):
        cityscapes.encode_pair(pair)


def test_jpeg_option_reencodes_images(tmp_path):
    root = str(tmp_path / "cityscapes")
    image, _ = _write_city(root, "val", "ulm", "ulm_000000_000000", size=(16, 16))
    image_path, label_path = cityscapes.find_pairs(root, "val")[0]
    record, _, _ = cityscapes.encode_pair((image_path, label_path, "jpeg"))
    got_image, got_label = data.decode_example(record)
    assert got_image.shape == (16, 16, 3) and got_label.shape == (16, 16)
    feature = tf.train.Example.FromString(record).features.feature
    assert feature["image/format"].bytes_list.value == [b"jpeg"]
    assert feature["image/encoded"].bytes_list.value[0][:2] == b"\xff\xd8"  # JPEG magic
    # Lossy, and these images are pure noise: only their mean survives closely.
    assert abs(got_image.numpy().mean() - image.mean()) < 5


def _run_script(path, *args):
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), path)
    return subprocess.run([sys.executable, script, *args], capture_output=True, text=True,
                          timeout=300)


def _convert_cli(root, out, *extra):
    return _run_script("datasets/cityscapes.py", "--root", root, "--out", out, "--splits", "val",
                       "--num-shards", "1", "--workers", "1", *extra)


def test_a_truncated_image_is_refused_by_name_and_nothing_is_written(tmp_path):
    root, out = str(tmp_path / "cityscapes"), str(tmp_path / "out")
    _write_city(root, "val", "bonn", "bonn_000000_000000", size=(64, 64))
    image = os.path.join(root, "leftImg8bit", "val", "bonn", "bonn_000000_000000_leftImg8bit.png")
    with open(image, "r+b") as f:  # what a cut-off copy leaves: the header and part of the data
        f.truncate(os.path.getsize(image) // 2)
    result = _convert_cli(root, out)
    assert result.returncode != 0
    assert "bonn_000000_000000_leftImg8bit.png: cannot read image" in result.stderr
    assert not [f for f in os.listdir(out) if "tfrecord" in f]


def test_a_16_bit_label_above_255_is_refused(tmp_path):
    root = str(tmp_path / "cityscapes")
    _write_city(root, "val", "ulm", "ulm_000000_000000")
    image_path, label_path = cityscapes.find_pairs(root, "val")[0]
    ids = np.full((12, 20), 7, np.uint16)
    ids[0, 0] = 263  # 263 % 256 == 7: road, if it were cast to uint8
    Image.fromarray(ids).save(label_path)
    with pytest.raises(ValueError, match="ulm_000000_000000_gtFine_labelIds.png: holds label id 263"):
        cityscapes.encode_pair((image_path, label_path))


def test_ids_outside_the_official_34_are_counted_or_refused_with_strict(tmp_path):
    root, out = str(tmp_path / "cityscapes"), str(tmp_path / "out")
    _, ids = _write_city(root, "val", "ulm", "ulm_000000_000000")
    image_path, label_path = cityscapes.find_pairs(root, "val")[0]
    ids[:2] = 40  # 2 rows of 20 pixels with an id Cityscapes does not define
    ids[2, :3] = 254
    Image.fromarray(ids).save(label_path)
    summary = cityscapes.convert(root, out, splits=("val",), num_shards=1, workers=1, log=None)
    assert summary["val"].unknown_pixels == 43 and summary["val"].unknown_images == 1
    assert "WARNING: 43 pixels in 1 images have label ids" in summary["val"].format(
        data.CITYSCAPES.class_names)
    with pytest.raises(ValueError, match=r"labelIds.png: 43 pixels have label ids .*\(40, 254\)"):
        cityscapes.encode_pair((image_path, label_path, "png", True))
    result = _convert_cli(root, str(tmp_path / "strict"), "--strict")
    assert result.returncode != 0 and "43 pixels have label ids" in result.stderr


def test_synthetic_scenes_in_cityscapes_layout_convert_to_their_classes(tmp_path, labels):
    """`datasets/synthetic.py --layout cityscapes` writes files the converter reads as it reads
    Cityscapes: each synthetic class arrives as the official class of its name (via the official
    label ids), the ego vehicle's hood and the rectification border as ignored pixels."""
    from synergyseg.data import synthetic, synthetic_cityscapes

    root, out = str(tmp_path / "root"), str(tmp_path / "out")
    synthetic_cityscapes.generate(root, num_train=3, num_val=2, height=64, width=128, log=None)
    assert len(os.listdir(os.path.join(root, "leftImg8bit", "train"))) == 3  # one city per scene
    cityscapes.convert(root, out, splits=("val",), num_shards=1, workers=1, log=None)
    got = list(data.eval_dataset(os.path.join(out, "val-*.tfrecord")))
    assert len(got) == 2
    official = {label.name: label.trainId for label in labels.labels}
    for i, (image, label) in enumerate(got):
        want_image, want_label = synthetic.render_scene(
            (synthetic_cityscapes.CITYSCAPES_SEED_OFFSET, 1, i), 64, 128)
        want = np.array([official[name] for name in data.SYNTHETIC.class_names])[want_label]
        label = label[0].numpy()
        hood = label == 255
        assert hood[1:-1, 1:-1].any() and not hood[1:-1, 1:-1][:40].any()  # bottom rows only
        assert hood[0].all() and hood[-1].all() and hood[:, 0].all() and hood[:, -1].all()
        np.testing.assert_array_equal(label[~hood], want[~hood])
        np.testing.assert_array_equal(image[0].numpy()[1:-1, 1:-1][:40], want_image[1:-1, 1:-1][:40])
    # A second run into the same root is refused, naming it, and leaves it as it was.
    again = _run_script("datasets/synthetic.py", "--layout", "cityscapes", "--out", root)
    assert again.returncode != 0 and root in again.stderr
    assert len(os.listdir(os.path.join(root, "leftImg8bit", "val"))) == 2
