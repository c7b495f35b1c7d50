"""Cityscapes prepared by tensorflow-datasets (`cityscapes/semantic_segmentation`) as our batches.

TFDS builds the dataset from the official `leftImg8bit_trainvaltest.zip` and
`gtFine_trainvaltest.zip` placed in its manual_dir; its labels are the 34 official label ids, so
they go through the same 34 -> 19 table and the same augmentation as our own shards.
"""

from synergyseg.data.augment import SCALE_RANGE
from synergyseg.data.info import CITYSCAPES_ID_TO_TRAIN_ID
from synergyseg.data.pipeline import eval_batches, train_batches

TFDS_NAME = "cityscapes/semantic_segmentation"


def prepare_tfds_cityscapes(manual_dir, data_dir=None):
    """Build the TFDS Cityscapes dataset from the two official zips in `manual_dir` (offline)."""
    import tensorflow_datasets as tfds  # optional at import time: only TFDS users need it

    builder = tfds.builder(TFDS_NAME, data_dir=data_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=manual_dir))
    return builder


def tfds_cityscapes(split, batch_size, *, training=None, data_dir=None, crop_size=None,
                    scale_range=SCALE_RANGE, flip=True, jitter=False, seed=None,
                    shuffle_buffer=64, resize_factor=None, limit=None):
    """Batches of `(image, label)` from an already prepared TFDS Cityscapes, with train ids.

    Args:
        split: a TFDS split, e.g. "train", "validation", "train[:10%]".
        batch_size: examples per batch.
        training: augment and shuffle (default: True for splits that start with "train").
        data_dir: TFDS data directory (default: TFDS's own, ~/tensorflow_datasets).
        crop_size, scale_range, flip, jitter, seed, shuffle_buffer: as in `train_dataset`.
        resize_factor, limit: as in `eval_dataset`.

    Returns:
        The same kind of dataset as `train_dataset` / `eval_dataset`.
    """
    import tensorflow_datasets as tfds

    if training is None:
        training = split.startswith("train")
    builder = tfds.builder(TFDS_NAME, data_dir=data_dir)
    ds = builder.as_dataset(split=split, shuffle_files=training,
                            read_config=tfds.ReadConfig(shuffle_seed=seed))
    if limit is not None:
        ds = ds.take(limit)
    ds = ds.map(lambda ex: (ex["image_left"], ex["segmentation_label"][..., 0]))
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        if crop_size is None:
            raise ValueError("tfds_cityscapes: training batches need crop_size=(height, width)")
        return train_batches(ds, batch_size, crop_size, scale_range=scale_range, flip=flip,
                             jitter=jitter, label_map=CITYSCAPES_ID_TO_TRAIN_ID, seed=seed)
    return eval_batches(ds, batch_size, resize_factor=resize_factor,
                        label_map=CITYSCAPES_ID_TO_TRAIN_ID)
