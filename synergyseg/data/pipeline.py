"""tf.data pipelines from TFRecord shards to `(image, label)` batches for `model.fit` and evaluation.

Batches are `image` float32 (B, H, W, 3) RGB in [0, 255] and `label` int32 (B, H, W) with 255 =
ignore. Everything after the file read is TF ops, so the pipeline runs in parallel and under
tf.distribute.
"""

import contextlib
import glob
import os
import re

import tensorflow as tf

from synergyseg.data import augment as augment_lib
from synergyseg.data.info import lookup_table
from synergyseg.data.tfrecord import decode_example

AUTOTUNE = tf.data.AUTOTUNE
# Shards read at once: enough to mix cities/sequences, few enough to keep memory small.
_CYCLE_LENGTH = 8


def list_files(file_pattern):
    """Sorted files matching a glob string, or a list of paths; an error if none or any missing."""
    if isinstance(file_pattern, (str, os.PathLike)):
        files = sorted(glob.glob(os.fspath(file_pattern)))
        if not files:
            raise FileNotFoundError(f"{os.fspath(file_pattern)!r} matches no TFRecord files")
        return files
    files = [os.fspath(f) for f in file_pattern]
    if not files:
        raise ValueError("file_pattern is an empty list; expected TFRecord files")
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(f"TFRecord file not found: {missing[0]} ({len(missing)} missing)")
    return files


def verify_records(file_pattern, *, decode=True):
    """Read every record of every file and raise an error naming the file of the first bad one.

    tf.data's own errors for a corrupt or truncated shard ("corrupted record at 12") do not say
    which file; run this once over suspect shards. Returns the number of records read.
    """
    count = 0
    for path in list_files(file_pattern):
        index = -1
        try:
            for index, record in enumerate(tf.data.TFRecordDataset(path)):
                if decode:
                    decode_example(record)
                count += 1
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
            # Keep TF's reason ("corrupted record at 12"), drop its op and function names.
            reason = re.sub(r"\{\{.*?\}\}|\[Op:.*$", "", e.message, flags=re.S).strip()
            raise ValueError(f"{path}: record {index + 1} (counting from 0) is unreadable: "
                             f"{reason}") from e
    return count


@contextlib.contextmanager
def naming_bad_records(*file_patterns):
    """Re-raises tf.data's "corrupted record at 0" / "Invalid PNG data" as an error naming the file.

    tf.data's errors do not say which shard is bad; on such an error this reads `file_patterns`
    with `verify_records` (CRC first, then decoding) and raises its ValueError, which does.
    """
    try:
        yield
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
        # A decode pass reads every image; only an image error is worth it (a model's shape
        # error is an InvalidArgumentError too).
        image_error = re.search(r"PNG|JPEG|image|decode", str(error), re.I) is not None
        for decode in (False, True) if image_error else (False,):
            for pattern in file_patterns:
                try:
                    verify_records(pattern, decode=decode)
                except ValueError as named:
                    raise named from error
        raise


def label_lookup_table(label_map):
    """`info.lookup_table(label_map)` as an int32 tensor for tf.gather."""
    return tf.constant(lookup_table(label_map), tf.int32)


def _to_model_types(image, label, table):
    label = tf.cast(label, tf.int32)
    if table is not None:
        label = tf.gather(table, label)
    return tf.cast(image, tf.float32), label


def train_batches(examples, batch_size, crop_size, *, scale_range=augment_lib.SCALE_RANGE, flip=True,
                  jitter=False, label_map=None, seed=None):
    """Augment and batch a dataset of `(image uint8 (H, W, 3), label (H, W))` for training.

    The shared back half of `train_dataset` and `tfds_cityscapes`. With a seed, the same input
    order gives the same crops; each pass over the data draws new ones.
    """
    crop_size = tuple(int(s) for s in crop_size)
    table = None if label_map is None else label_lookup_table(label_map)
    # One random integer per example seeds its stateless augmentation, so results do not depend
    # on which parallel map call handles the example.
    randoms = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    base = tf.cast(0 if seed is None else seed, tf.int64)  # a Python int or a tensor

    def transform(example, random):
        image, label = augment_lib.augment(
            *example, tf.stack([random, base]), crop_size=crop_size, scale_range=scale_range,
            flip=flip, jitter=jitter)
        # Map labels after the crop: fewer pixels, and padding (255) stays 255.
        return image, label if table is None else tf.gather(table, label)

    ds = tf.data.Dataset.zip(examples, randoms).map(transform, num_parallel_calls=AUTOTUNE)
    # Equal batch shapes are what tf.distribute and XLA want; the remainder is dropped.
    return ds.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)


def eval_batches(examples, batch_size=1, *, resize_factor=None, label_map=None):
    """Batch `(image, label)` examples for evaluation: no augmentation, labels at full size.

    `resize_factor` resizes only the image (bilinear); the label stays at its original size so
    predictions are scored at full resolution. Batches of more than one need equal image sizes.
    """
    table = None if label_map is None else label_lookup_table(label_map)

    def transform(image, label):
        image, label = _to_model_types(image, label, table)
        if resize_factor is not None and resize_factor != 1:
            size = tf.cast(tf.round(tf.cast(tf.shape(image)[:2], tf.float32) * resize_factor),
                           tf.int32)
            image = tf.image.resize(image, size, method="bilinear")
        return image, label

    return examples.map(transform, num_parallel_calls=AUTOTUNE).batch(batch_size).prefetch(AUTOTUNE)


def _shuffled_batches(files, batch_size, crop_size, *, scale_range, flip, jitter, label_map, seed,
                      shuffle_buffer, input_context):
    """One shuffled, augmented pass over `files`; `seed` may be a tensor (see `train_epochs`)."""
    ds = tf.data.Dataset.from_tensor_slices(files)
    if input_context is not None and input_context.num_input_pipelines > 1:
        if len(files) < input_context.num_input_pipelines:
            raise ValueError(
                f"{len(files)} files cannot be sharded over {input_context.num_input_pipelines} "
                f"input pipelines; write at least that many shards")
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), _CYCLE_LENGTH),
                       num_parallel_calls=AUTOTUNE, deterministic=seed is not None)
    # Shuffle serialized records, not decoded images: they are many times smaller.
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(decode_example, num_parallel_calls=AUTOTUNE)
    ds = train_batches(ds, batch_size, crop_size, scale_range=scale_range, flip=flip,
                       jitter=jitter, label_map=label_map, seed=seed)
    return ds


def train_dataset(file_pattern, batch_size, crop_size, *, scale_range=augment_lib.SCALE_RANGE,
                  flip=True, jitter=False, label_map=None, seed=None, shuffle_buffer=256,
                  input_context=None):
    """Training batches from TFRecord shards: shuffled, augmented, cropped to `crop_size`.

    Args:
        file_pattern: glob string or list of TFRecord files.
        batch_size: global batch size; with `input_context` each input pipeline gets its
            per-replica share (`input_context.get_per_replica_batch_size`).
        crop_size: (height, width) of every training crop.
        scale_range: (low, high) random scale factors, or None for no scaling.
        flip: random horizontal flips.
        jitter: random brightness/contrast/saturation/hue.
        label_map: optional id -> train id table (sequence or dict); unlisted ids become 255.
        seed: makes the batches (order and augmentation) reproducible.
        shuffle_buffer: examples in the shuffle buffer.
        input_context: a `tf.distribute.InputContext`; files are sharded across input pipelines.

    Returns:
        A finite `tf.data.Dataset` (one pass = one epoch) of `(image, label)`: float32
        (B, h, w, 3) in [0, 255] and int32 (B, h, w) with 255 = ignore.

    Example:
        ds = train_dataset("data/synthetic/train-*.tfrecord", 8, (256, 512), seed=0)
        model.fit(ds, epochs=10)
    """
    ds = _shuffled_batches(list_files(file_pattern), batch_size, crop_size, scale_range=scale_range,
                           flip=flip, jitter=jitter, label_map=label_map, seed=seed,
                           shuffle_buffer=shuffle_buffer, input_context=input_context)
    options = tf.data.Options()
    # Without a seed, let parallel stages hand out whichever element is ready first.
    options.deterministic = seed is not None
    return ds.with_options(options)


# Epoch e of a run with seed s draws its batches from seed s * _EPOCH_SEED_STRIDE + e.
_EPOCH_SEED_STRIDE = 1_000_003


def train_epochs(file_pattern, batch_size, crop_size, *, steps_per_epoch, epochs, initial_epoch=0,
                 seed=0, scale_range=augment_lib.SCALE_RANGE, flip=True, jitter=False,
                 label_map=None, shuffle_buffer=256, input_context=None):
    """`train_dataset` for `model.fit(..., initial_epoch=initial_epoch, epochs=epochs)`.

    Epoch e is the first `steps_per_epoch` batches of passes seeded by (seed, e) alone, so a run
    resumed at epoch e sees exactly the batches an uninterrupted run sees there (a seeded
    `repeat()` stream would replay epoch 0's). Yields (epochs - initial_epoch) * steps_per_epoch
    batches; the other arguments are `train_dataset`'s.

    Example:
        ds = train_epochs("data/synthetic/train-*.tfrecord", 8, (128, 256), steps_per_epoch=50,
                          epochs=15, initial_epoch=4, seed=0)
        model.fit(ds, epochs=15, initial_epoch=4, steps_per_epoch=50)
    """
    files = list_files(file_pattern)

    def one_epoch(epoch):
        # This traced function's own graph-level seed: fixed and non-zero, so the batches depend
        # on the epoch seed alone, and TF's seed helper never compares a tensor seed with 0.
        tf.random.set_seed(_EPOCH_SEED_STRIDE)
        epoch_seed = tf.constant(seed, tf.int64) * _EPOCH_SEED_STRIDE + epoch
        passes = _shuffled_batches(
            files, batch_size, crop_size, scale_range=scale_range, flip=flip, jitter=jitter,
            label_map=label_map, seed=epoch_seed, shuffle_buffer=shuffle_buffer,
            input_context=input_context)
        return passes.repeat().take(steps_per_epoch)

    epochs_ds = tf.data.Dataset.range(initial_epoch, epochs, output_type=tf.int64)
    return epochs_ds.flat_map(one_epoch).prefetch(AUTOTUNE)


def eval_dataset(file_pattern, batch_size=1, *, resize_factor=None, label_map=None, limit=None):
    """Evaluation batches from TFRecord shards, in file order, without augmentation.

    Images are full size, or resized by `resize_factor`; labels are never resized. Batches of
    more than one example need all images of a batch to have the same size.

    Example:
        for image, label in eval_dataset("data/synthetic/val-*.tfrecord"): ...
    """
    files = list_files(file_pattern)
    ds = tf.data.TFRecordDataset(files)
    if limit is not None:
        ds = ds.take(limit)
    ds = ds.map(decode_example, num_parallel_calls=AUTOTUNE)
    return eval_batches(ds, batch_size, resize_factor=resize_factor, label_map=label_map)
