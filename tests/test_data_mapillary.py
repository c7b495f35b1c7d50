"""Mapillary Vistas: palettized label ids, the config's scored classes, both layouts, resizing."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from synergyseg import data
from synergyseg.data import mapillary

# Four labels in Vistas' config format; the last is "Unlabeled" with evaluate: false, as in v1.2.
CONFIG = {"labels": [
    {"name": "animal--bird", "readable": "Bird", "color": [165, 42, 42], "instances": True,
     "evaluate": True},
    {"name": "construction--barrier--curb", "readable": "Curb", "color": [196, 196, 196],
     "instances": False, "evaluate": True},
    {"name": "nature--sky", "readable": "Sky", "color": [70, 130, 180], "instances": False,
     "evaluate": True},
    {"name": "void--unlabeled", "readable": "Unlabeled", "color": [0, 0, 0], "instances": False,
     "evaluate": False},
]}


def _palettized(ids):
    image = Image.fromarray(ids, mode="P")
    palette = [c for label in CONFIG["labels"] for c in label["color"]]
    image.putpalette(palette + [0] * (768 - len(palette)))
    return image


def _write_vistas(root, split, labels_dir, config_name, n=2, size=(20, 30)):
    os.makedirs(os.path.join(root, split, "images"), exist_ok=True)
    os.makedirs(os.path.join(root, split, labels_dir), exist_ok=True)
    with open(os.path.join(root, config_name), "w") as f:
        json.dump(CONFIG, f)
    rng = np.random.default_rng(0)
    ids_all = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8)).save(
            os.path.join(root, split, "images", f"img{i}.jpg"))
        ids = rng.integers(0, 4, size, dtype=np.uint8)
        _palettized(ids).save(os.path.join(root, split, labels_dir, f"img{i}.png"))
        ids_all.append(ids)
    return ids_all


def test_info_from_config(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(CONFIG))
    info = data.mapillary_info(str(path))
    assert info.num_classes == 3 and info.class_names == ("Bird", "Curb", "Sky")
    assert info.colors[2] == (70, 130, 180)
    np.testing.assert_array_equal(data.mapillary_id_table(str(path))[:5], [0, 1, 2, 255, 255])


def test_palettized_labels_give_ids_not_colours(tmp_path):
    ids = np.array([[0, 1], [2, 3]], np.uint8)
    path = str(tmp_path / "label.png")
    _palettized(ids).save(path)
    np.testing.assert_array_equal(mapillary.read_label_indices(path), ids)
    # What TensorFlow does with the same file (tensorflow/tensorflow#28256): palette colours.
    decoded = tf.io.decode_png(tf.io.read_file(path)).numpy()
    assert decoded.shape[-1] == 3 and tuple(decoded[1, 0]) == (70, 130, 180)


@pytest.mark.parametrize("labels_dir,config_name", [("labels", "config.json"),
                                                    ("v1.2/labels", "config_v1.2.json")])
def test_convert_both_layouts(tmp_path, labels_dir, config_name):
    root, out = str(tmp_path / "vistas"), str(tmp_path / "out")
    ids = _write_vistas(root, "validation", labels_dir, config_name)
    summary = mapillary.convert(root, out, splits=("validation",), num_shards=1, workers=1,
                                log=None)
    assert summary["val"].images == 2
    assert summary["val"].pixel_counts[255] == sum(int((i == 3).sum()) for i in ids)
    for (_, label), want in zip(data.eval_dataset(os.path.join(out, "val-*.tfrecord")), ids):
        np.testing.assert_array_equal(label[0].numpy(), np.where(want == 3, 255, want))


def test_resize_shorter_side_nearest_labels(tmp_path):
    root, out = str(tmp_path / "vistas"), str(tmp_path / "out")
    ids = _write_vistas(root, "training", "labels", "config.json", n=1, size=(40, 60))
    mapillary.convert(root, out, splits=("training",), max_short_side=20, num_shards=1,
                      workers=1, log=None)
    image, label = next(iter(data.eval_dataset(os.path.join(out, "train-*.tfrecord"))))
    assert image.shape == (1, 20, 30, 3) and label.shape == (1, 20, 30)
    # Nearest neighbour at exactly 1/2 samples the source pixel under each output pixel centre:
    # output i covers source 2i..2i+1, centre 2i+1. A bilinear resize would mix ids.
    want = np.where(ids[0] == 3, 255, ids[0])
    np.testing.assert_array_equal(label[0].numpy(), want[1::2, 1::2])


def test_bad_input(tmp_path):
    root = str(tmp_path / "vistas")
    with pytest.raises(FileNotFoundError, match="config"):
        os.makedirs(root)
        mapillary.convert(root, str(tmp_path / "out"), log=None)
    _write_vistas(root, "training", "labels", "config.json", n=1)
    os.remove(os.path.join(root, "training", "labels", "img0.png"))
    with pytest.raises(FileNotFoundError, match="img0.jpg has no label"):
        mapillary.find_pairs(root, "training")
    rgb = os.path.join(root, "rgb.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(rgb)
    with pytest.raises(ValueError, match="rgb.png: expected a palettized"):
        mapillary.read_label_indices(rgb)


def test_indices_the_config_does_not_define_are_counted_or_refused_with_strict(tmp_path):
    root, out = str(tmp_path / "vistas"), str(tmp_path / "out")
    ids = _write_vistas(root, "validation", "labels", "config.json", n=1)[0]
    ids[0, :5] = 9  # the config defines indices 0..3
    label = os.path.join(root, "validation", "labels", "img0.png")
    _palettized(ids).save(label)
    summary = mapillary.convert(root, out, splits=("validation",), num_shards=1, workers=1,
                                log=None)
    assert summary["val"].unknown_pixels == 5
    with pytest.raises(ValueError, match=r"img0.png: 5 pixels have label ids .*\(9\)"):
        mapillary.convert(root, str(tmp_path / "strict"), splits=("validation",), num_shards=1,
                          strict=True, workers=1, log=None)
