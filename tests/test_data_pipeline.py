"""The tf.data pipelines: crop/pad values, flips, label maps, determinism, eval sizes, sharding."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from synergyseg import data
from synergyseg.data import augment


def _png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """4 shards of 3 examples each: 16x24 images whose pixels encode the example index."""
    out = tmp_path_factory.mktemp("shards")
    files = []
    for s in range(4):
        path = str(out / data.shard_name("train", s, 4))
        with tf.io.TFRecordWriter(path) as writer:
            for k in range(3):
                index = 3 * s + k
                image = np.full((16, 24, 3), 10 * index, np.uint8)
                image[:, :, 1] = np.arange(24, dtype=np.uint8)[None] * 5  # left-right gradient
                label = np.tile(np.arange(24, dtype=np.uint8) % 4, (16, 1))
                label[0, 0] = 255
                writer.write(data.encode_example(_png(image), _png(label), filename=f"{index}.png",
                                                 height=16, width=24))
        files.append(path)
    return files


def test_pad_fills_image_with_mean_and_label_with_ignore():
    image = tf.fill((4, 6, 3), 7.0)
    label = tf.zeros((4, 6), tf.int32)
    got_image, got_label = augment.random_crop(image, label, tf.constant([1, 2]), (8, 10))
    got_image, got_label = got_image.numpy(), got_label.numpy()
    assert got_image.shape == (8, 10, 3) and got_label.shape == (8, 10)
    np.testing.assert_array_equal(got_image[:4, :6], 7.0)  # smaller than the crop: offset 0
    np.testing.assert_allclose(got_image[4:, :], np.broadcast_to(data.IMAGENET_MEAN_RGB, (4, 10, 3)),
                               rtol=1e-6)
    np.testing.assert_allclose(got_image[:, 6:], np.broadcast_to(data.IMAGENET_MEAN_RGB, (8, 4, 3)),
                               rtol=1e-6)
    assert (got_label[:4, :6] == 0).all() and (got_label[4:] == 255).all()
    assert (got_label[:, 6:] == 255).all()


def test_crop_is_a_window_of_the_input_and_labels_stay_aligned():
    image = tf.reshape(tf.range(20 * 30 * 3, dtype=tf.float32), (20, 30, 3))
    label = tf.reshape(tf.range(20 * 30) % 200, (20, 30))
    for seed in range(5):
        got_image, got_label = augment.random_crop(image, label, tf.constant([seed, 0]), (8, 12))
        top_left = int(got_image[0, 0, 0]) // 3
        top, left = divmod(top_left, 30)
        np.testing.assert_array_equal(got_image, image[top:top + 8, left:left + 12])
        np.testing.assert_array_equal(got_label, label[top:top + 8, left:left + 12])


def test_scale_resizes_labels_with_nearest_neighbour():
    label = tf.constant(np.repeat(np.array([[3, 7], [255, 1]], np.int32), 8, axis=1))
    image = tf.zeros((2, 16, 3))
    for seed in range(4):
        got_image, got_label = augment.random_scale_crop(image, label, tf.constant([seed, 0]),
                                                         (2, 16), augment.SCALE_RANGE)
        assert got_image.shape[:2] == got_label.shape
        assert set(np.unique(got_label)) <= {1, 3, 7, 255}


def test_flip_mirrors_image_and_label_together():
    image = tf.reshape(tf.range(2 * 5 * 3, dtype=tf.float32), (2, 5, 3))
    label = tf.reshape(tf.range(10), (2, 5))
    seen = set()
    for seed in range(8):
        got_image, got_label = augment.random_flip(image, label, tf.constant([seed, 0]))
        flipped = bool(got_label[0, 0] == 4)
        seen.add(flipped)
        want_image, want_label = (image[:, ::-1], label[:, ::-1]) if flipped else (image, label)
        np.testing.assert_array_equal(got_image, want_image)
        np.testing.assert_array_equal(got_label, want_label)
    assert seen == {True, False}


def test_jitter_keeps_range():
    image = tf.random.stateless_uniform((8, 8, 3), (0, 1), 0, 255)
    out = augment.photometric_jitter(image, tf.constant([3, 4])).numpy()
    assert out.min() >= 0 and out.max() <= 255 and not np.allclose(out, image)


def _batches(ds):
    return [(i.numpy(), l.numpy()) for i, l in ds]


def test_train_dataset_shapes_types_and_seeded_determinism(shards):
    kwargs = dict(crop_size=(8, 12), jitter=True, shuffle_buffer=6)
    first = _batches(data.train_dataset(shards, 4, seed=7, **kwargs))
    again = _batches(data.train_dataset(shards, 4, seed=7, **kwargs))
    other = _batches(data.train_dataset(shards, 4, seed=8, **kwargs))
    assert len(first) == 3  # 12 examples, batch 4
    image, label = first[0]
    assert image.shape == (4, 8, 12, 3) and image.dtype == np.float32
    assert label.shape == (4, 8, 12) and label.dtype == np.int32
    assert 0 <= image.min() and image.max() <= 255
    for (a, b), (c, d) in zip(first, again):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    assert any(not np.array_equal(a, c) for (a, _), (c, _) in zip(first, other))


def test_train_dataset_new_epoch_new_order_and_crops(shards):
    ds = data.train_dataset(shards, 12, crop_size=(8, 12), seed=1, shuffle_buffer=12)
    epoch1, epoch2 = _batches(ds), _batches(ds)
    assert not np.array_equal(epoch1[0][0], epoch2[0][0])


def test_label_map_is_applied_and_unlisted_ids_become_ignore(shards):
    ds = data.train_dataset(shards, 2, crop_size=(16, 24), scale_range=None, flip=False,
                            label_map={0: 5, 1: 6, 2: 7}, seed=0)
    _, label = next(iter(ds))
    np.testing.assert_array_equal(label[0, 1], np.array([5, 6, 7, 255] * 6))
    assert label[0, 0, 0] == 255


def test_eval_dataset_full_size_in_order_and_resize_factor(shards):
    batches = _batches(data.eval_dataset(shards, limit=5))
    assert len(batches) == 5
    assert [int(i[0, 0, 0, 0]) for i, _ in batches] == [0, 10, 20, 30, 40]  # file order
    image, label = batches[0]
    assert image.shape == (1, 16, 24, 3) and label.shape == (1, 16, 24)
    image, label = next(iter(data.eval_dataset(shards[0], 3, resize_factor=0.5)))
    assert image.shape == (3, 8, 12, 3)
    assert label.shape == (3, 16, 24)  # labels are never resized


def test_input_context_shards_files_and_splits_the_batch(shards):
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1,
                                         num_replicas_in_sync=2)
    batches = _batches(data.train_dataset(shards, 2, crop_size=(16, 24), scale_range=None,
                                          flip=False, seed=0, input_context=context))
    indices = sorted(int(v) // 10 for image, _ in batches for v in image[:, 0, 0, 0])
    assert [b.shape[0] for b, _ in batches] == [1] * 6  # per-replica batch: 2 / 2
    assert indices == [3, 4, 5, 9, 10, 11]  # shards 1 and 3 of 4
    with pytest.raises(ValueError, match="cannot be sharded"):
        data.train_dataset(shards[:1], 2, (8, 8), input_context=context)


def test_scale_crop_matches_resizing_the_whole_image():
    # At scale 2 with a crop of the whole scaled image, the window computation must give what
    # tf.image.resize gives (away from the sub-pixel band at the border it treats as outside).
    image = tf.reshape(tf.range(8 * 10 * 3, dtype=tf.float32), (8, 10, 3))
    label = tf.reshape(tf.range(80) % 7, (8, 10))
    got_image, got_label = augment.random_scale_crop(image, label, tf.constant([0, 0]),
                                                     (16, 20), (2.0, 2.0))
    want_image = tf.image.resize(image, (16, 20), method="bilinear")
    np.testing.assert_allclose(got_image[1:-1, 1:-1], want_image[1:-1, 1:-1], atol=1e-3)
    assert set(np.unique(got_label)) <= set(range(7)) | {255}
    # Each 2x2 block of the upscaled label holds its source pixel (nearest neighbour).
    np.testing.assert_array_equal(got_label[2:-2:2, 2:-2:2], label[1:-1, 1:-1])


def test_scale_crop_pads_outside_the_scaled_image():
    image = tf.fill((8, 10, 3), tf.constant(9, tf.uint8))
    label = tf.fill((8, 10), tf.constant(3, tf.uint8))
    got_image, got_label = augment.random_scale_crop(image, label, tf.constant([1, 1]),
                                                     (12, 12), (0.5, 0.5))
    got_image, got_label = got_image.numpy(), got_label.numpy()
    assert got_image.dtype == np.float32 and got_label.dtype == np.int32
    # The 4x5 scaled image sits at the top left; everything else is padding.
    np.testing.assert_allclose(got_image[:4, :5], 9.0)
    assert (got_label[:4, :5] == 3).all()
    np.testing.assert_allclose(got_image[4:], np.broadcast_to(data.IMAGENET_MEAN_RGB, (8, 12, 3)))
    assert (got_label[4:] == 255).all() and (got_label[:, 5:] == 255).all()


def test_train_epochs_depend_on_the_epoch_alone_so_a_resume_sees_the_same_batches(shards):
    def images(initial_epoch):
        ds = data.pipeline.train_epochs(shards, 2, (8, 8), steps_per_epoch=3, epochs=3,
                                        initial_epoch=initial_epoch, seed=5, scale_range=None)
        return [image.numpy() for image, _ in ds]

    full, resumed = images(0), images(2)
    assert len(full) == 9 and len(resumed) == 3
    for a, b in zip(full[6:], resumed):  # epoch 3 of the uninterrupted run == the resumed one's
        np.testing.assert_array_equal(a, b)
    # Each epoch draws its own batches (not a replay of epoch 1's).
    assert not all(np.array_equal(a, b) for a, b in zip(full[:3], full[3:6]))


def test_a_corrupt_shard_is_named_when_tf_data_fails(shards, tmp_path):
    bad = tmp_path / "train-00001-of-00002.tfrecord"
    good = open(shards[0], "rb").read()
    bad.write_bytes(good[: len(good) // 2])  # truncated, as by a full disk or a cut-off copy
    files = [shards[0], str(bad)]
    with pytest.raises(ValueError, match=r"train-00001-of-00002.tfrecord: record \d+ .*unreadable"):
        with data.pipeline.naming_bad_records(files):
            for _ in data.eval_dataset(files):
                pass
