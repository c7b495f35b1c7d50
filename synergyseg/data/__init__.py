"""Data for synergyseg: dataset metadata, TFRecord shards, converters and tf.data pipelines.

    from synergyseg import data
    data.synthetic.generate("data/synthetic")
    ds = data.train_dataset("data/synthetic/train-*.tfrecord", 8, (256, 512), seed=0)
"""

from synergyseg.data import cityscapes, mapillary, synthetic
from synergyseg.data.info import (
    CITYSCAPES, CITYSCAPES_ID_TO_TRAIN_ID, CITYSCAPES_TRAIN_ID_TO_ID, IGNORE_LABEL, IMAGENET_MEAN_RGB,
    SYNTHETIC, DatasetInfo, mapillary_id_table, mapillary_info)
from synergyseg.data.pipeline import (
    eval_batches, eval_dataset, list_files, train_batches, train_dataset, verify_records)
from synergyseg.data.shards import ConversionSummary, shard_name, shard_pattern
from synergyseg.data.tfds import prepare_tfds_cityscapes, tfds_cityscapes
from synergyseg.data.tfrecord import decode_example, encode_example

__all__ = [
    "CITYSCAPES", "CITYSCAPES_ID_TO_TRAIN_ID", "CITYSCAPES_TRAIN_ID_TO_ID", "IGNORE_LABEL",
    "IMAGENET_MEAN_RGB", "SYNTHETIC", "ConversionSummary", "DatasetInfo", "cityscapes", "decode_example",
    "encode_example", "eval_batches", "eval_dataset", "mapillary", "mapillary_id_table",
    "mapillary_info", "prepare_tfds_cityscapes", "shard_name", "shard_pattern", "synthetic",
    "tfds_cityscapes", "train_batches", "train_dataset", "list_files", "verify_records",
]
