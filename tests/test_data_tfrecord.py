"""The TFRecord schema: DeepLab-layout records load unchanged, round trips are exact, bad input
fails with the file's name."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from synergyseg import data


def _png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _deeplab_example(image_data, seg_data, filename, height, width):
    """tensorflow/models research/deeplab/datasets/build_data.py `image_seg_to_tfexample`,
    written out independently of synergyseg."""
    def b(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    def i(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))

    return tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": b(image_data),
        "image/filename": b(filename.encode()),
        "image/format": b(b"png"),
        "image/height": i(height),
        "image/width": i(width),
        "image/channels": i(3),
        "image/segmentation/class/encoded": b(seg_data),
        "image/segmentation/class/format": b(b"png"),
    })).SerializeToString()


def _scene(seed, h=12, w=20):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    label = rng.choice(np.array([0, 1, 2, 255], np.uint8), (h, w))
    return image, label


def test_deeplab_build_data_record_loads_unchanged(tmp_path):
    image, label = _scene(0)
    path = str(tmp_path / "deeplab.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(_deeplab_example(_png(image), _png(label), "a.png", 12, 20))
    (got_image, got_label), = list(data.eval_dataset(path))
    assert got_image.dtype == tf.float32 and got_label.dtype == tf.int32
    np.testing.assert_array_equal(got_image[0].numpy(), image.astype(np.float32))
    np.testing.assert_array_equal(got_label[0].numpy(), label.astype(np.int32))


def test_encode_decode_round_trip_png_and_jpeg():
    image, label = _scene(1)
    record = data.encode_example(_png(image), _png(label), filename="x.png", height=12, width=20)
    got_image, got_label = data.decode_example(record)
    np.testing.assert_array_equal(got_image.numpy(), image)
    np.testing.assert_array_equal(got_label.numpy(), label)
    parsed = tf.train.Example.FromString(record).features.feature
    assert parsed["image/segmentation/class/format"].bytes_list.value == [b"png"]
    assert parsed["image/height"].int64_list.value == [12]

    flat = np.full((16, 16, 3), 200, np.uint8)  # JPEG of a flat colour decodes back exactly
    buffer = io.BytesIO()
    Image.fromarray(flat).save(buffer, format="JPEG")
    record = data.encode_example(buffer.getvalue(), _png(np.zeros((16, 16), np.uint8)),
                                 filename="y.jpg", height=16, width=16, image_format="jpeg")
    got_image, _ = data.decode_example(record)
    assert np.abs(got_image.numpy().astype(int) - 200).max() <= 1


def test_label_size_mismatch_names_the_file(tmp_path):
    image, label = _scene(2)
    path = str(tmp_path / "bad.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(data.encode_example(_png(image), _png(label[:6]), filename="frankfurt_1.png",
                                         height=12, width=20))
    with pytest.raises(tf.errors.InvalidArgumentError, match="frankfurt_1.png"):
        list(data.eval_dataset(path))


def test_corrupt_record_is_reported_with_its_file(tmp_path):
    image, label = _scene(3)
    record = data.encode_example(_png(image), _png(label), filename="x.png", height=12, width=20)
    good, bad = str(tmp_path / "good.tfrecord"), str(tmp_path / "bad.tfrecord")
    with tf.io.TFRecordWriter(good) as writer:
        writer.write(record)
        writer.write(record)
    raw = open(good, "rb").read()
    open(bad, "wb").write(raw[:-5])  # the second record is cut short
    assert data.verify_records(good) == 2
    with pytest.raises(ValueError, match=r"bad\.tfrecord: record 1 .*unreadable.*truncated"):
        data.verify_records([good, bad])


def test_file_pattern_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        data.train_dataset(str(tmp_path / "nothing-here-*.tfrecord"), 2, (8, 8))
    with pytest.raises(FileNotFoundError, match="missing.tfrecord"):
        data.eval_dataset([str(tmp_path / "missing.tfrecord")])
