"""The shard writer: atomic shards, resume after an interruption, summary numbers."""

import os

import numpy as np
import pytest
import tensorflow as tf

from synergyseg.data import shards


class Interrupted(Exception):
    pass


def _encode(item):
    """A fake example: the record is the item's text; its label has `item` pixels of class 1."""
    if item == "stop":
        raise Interrupted("simulated kill during this shard")
    label = np.zeros(10, np.uint8)
    label[:item % 10] = 1
    label[9] = 255
    return str(item).encode(), shards.label_histogram(label)


def _records(path):
    return [r.numpy() for r in tf.data.TFRecordDataset(path)]


def test_shard_names():
    assert shards.shard_name("train", 3, 16) == "train-00003-of-00016.tfrecord"


def test_interrupted_run_leaves_no_half_shard_and_resumes(tmp_path, capsys):
    out = str(tmp_path)
    items = list(range(9))
    broken = items[:4] + ["stop"] + items[5:]  # item 4 lands in shard 1 of 3
    with pytest.raises(Interrupted):
        shards.write_shards(out, "train", broken, _encode, num_shards=3, workers=1, log=None)
    names = sorted(f for f in os.listdir(out) if not f.startswith("."))
    assert names == ["train-00000-of-00003.tfrecord"]  # shard 0 done; no partial or temp file

    lines = []
    summary = shards.write_shards(out, "train", items, _encode, num_shards=3, workers=1,
                                  log=lines.append)
    assert lines == ["[train] resuming: 1 of 3 shards already written"]
    # One progress bar for the split (counted in images), not a line per shard.
    out_text = capsys.readouterr().out
    assert out_text.count("[train] 9 images in 3 shards") == 1 and "9/9" in out_text
    assert "shard 2/" not in out_text
    assert _records(os.path.join(out, "train-00001-of-00003.tfrecord")) == [b"1", b"4", b"7"]
    assert summary.images == 9
    assert summary.pixel_counts[1] == sum(items) and summary.pixel_counts[255] == 9
    assert summary.pixel_counts[0] == 9 * 10 - sum(items) - 9
    assert summary.ignored_fraction == pytest.approx(0.1)
    text = summary.format(("zero", "one"))
    assert "9 images" in text and "ignored (255): 10.00%" in text


def test_stale_temporary_files_are_removed_and_other_shard_counts_refused(tmp_path):
    out = str(tmp_path)
    stale = os.path.join(out, "val-00000-of-00001.tfrecord.tmp-123")
    open(stale, "wb").write(b"half")
    shards.write_shards(out, "val", [1, 2], _encode, num_shards=1, workers=1, log=None)
    assert not os.path.exists(stale)
    with pytest.raises(FileExistsError, match="val-00000-of-00001.tfrecord"):
        shards.write_shards(out, "val", [1, 2], _encode, num_shards=2, workers=1, log=None)
