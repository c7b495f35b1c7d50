"""The TFRecord schema (DeepLab / TF Model Garden keys): encode one example, parse and decode it.

One `tf.train.Example` per image:
    image/encoded                    bytes  PNG or JPEG, RGB
    image/format                     bytes  b"png" or b"jpeg"
    image/filename                   bytes  source file name, used in error messages
    image/height, image/width        int64
    image/channels                   int64  3
    image/segmentation/class/encoded bytes  single-channel PNG, one class id per pixel, 255 = ignore
    image/segmentation/class/format  bytes  b"png"
These are the keys DeepLab's `build_data.py` writes, so shards made with it load unchanged.
"""

import tensorflow as tf

# Every key has a default so records written by tools that omit an optional key still parse;
# the two encoded payloads are required.
FEATURES = {
    "image/encoded": tf.io.FixedLenFeature((), tf.string),
    "image/format": tf.io.FixedLenFeature((), tf.string, default_value="png"),
    "image/filename": tf.io.FixedLenFeature((), tf.string, default_value=""),
    "image/height": tf.io.FixedLenFeature((), tf.int64, default_value=0),
    "image/width": tf.io.FixedLenFeature((), tf.int64, default_value=0),
    "image/channels": tf.io.FixedLenFeature((), tf.int64, default_value=3),
    "image/segmentation/class/encoded": tf.io.FixedLenFeature((), tf.string),
    "image/segmentation/class/format": tf.io.FixedLenFeature((), tf.string, default_value="png"),
}


def _bytes(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int64(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def encode_example(image_bytes, label_png, *, filename, height, width, image_format="png"):
    """Serialize one image and its label PNG as a `tf.train.Example` (bytes)."""
    if image_format not in ("png", "jpeg"):
        raise ValueError(f"{filename}: image_format must be 'png' or 'jpeg', got {image_format!r}")
    example = tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": _bytes(image_bytes),
        "image/format": _bytes(image_format.encode()),
        "image/filename": _bytes(filename.encode()),
        "image/height": _int64(height),
        "image/width": _int64(width),
        "image/channels": _int64(3),
        "image/segmentation/class/encoded": _bytes(label_png),
        "image/segmentation/class/format": _bytes(b"png"),
    }))
    # deterministic=True sorts the feature map, so the same inputs give byte-identical shards.
    return example.SerializeToString(deterministic=True)


def decode_example(serialized):
    """Parse and decode one serialized example into `(image uint8 (H, W, 3), label uint8 (H, W))`.

    A label whose size differs from its image fails with an error that names the file.
    """
    parsed = tf.io.parse_single_example(serialized, FEATURES)
    filename = parsed["image/filename"]
    # decode_image handles PNG and JPEG; expand_animations=False gives a static rank-3 tensor.
    image = tf.io.decode_image(parsed["image/encoded"], channels=3, expand_animations=False)
    label = tf.io.decode_png(parsed["image/segmentation/class/encoded"], channels=1)
    same_size = tf.reduce_all(tf.equal(tf.shape(image)[:2], tf.shape(label)[:2]))
    check = tf.debugging.Assert(same_size, [
        "label size differs from image size in the record for", filename,
        "image:", tf.shape(image), "label:", tf.shape(label)])
    with tf.control_dependencies([check]):
        label = tf.identity(label)
    image.set_shape([None, None, 3])
    return image, label[:, :, 0]
