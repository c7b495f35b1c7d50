"""A validation shard with a flipped block is named (file and problem) by train.py and evaluate.py.

tf.data's own error ("corrupted record at 0") names no file; a corrupt training shard was already
named, a validation one was not (it is counted and read outside the training loop).
"""

import glob
import os

import pytest

import evaluate
import synergyseg
from synergyseg import data
from synergyseg.training.config import preset
from synergyseg.training.run import train

TINY = dict(backbone="resnet18", backbone_width=8, head_filters=16, low_level_filters=8)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Synthetic shards whose only validation shard has 64 bytes inverted in its middle."""
    out = tmp_path_factory.mktemp("corrupt")
    data.synthetic.generate(str(out), num_train=4, num_val=2, height=64, width=128, seed=0,
                            num_shards=1, workers=1, log=None)
    (shard,) = glob.glob(str(out / "val-*.tfrecord"))
    with open(shard, "r+b") as f:
        f.seek(os.path.getsize(shard) // 2)
        block = f.read(64)
        f.seek(-len(block), os.SEEK_CUR)
        f.write(bytes(b ^ 0xFF for b in block))
    return out, shard


def test_train_names_the_corrupt_validation_shard(data_dir, tmp_path):
    # With TensorBoard images the shard is first read (and counted) for those images.
    out, shard = data_dir
    config = preset("synthetic", data_dir=str(out), run_dir=str(tmp_path / "run"), epochs=1,
                    crop_size=(64, 128), batch_size=2, steps_per_epoch=1, tensorboard_images=1,
                    **TINY)
    with pytest.raises(ValueError, match=r"record \d+ \(counting from 0\) is unreadable: "
                                         r"corrupted record") as error:
        train(config, log=lambda *a: None)
    assert str(error.value).startswith(shard)


def test_evaluate_names_the_corrupt_validation_shard(data_dir, tmp_path):
    out, shard = data_dir
    model = synergyseg.build_synergyseg(data.SYNTHETIC.num_classes, **TINY)
    model.save(tmp_path / "model.keras")
    with pytest.raises(ValueError, match="is unreadable: corrupted record") as error:
        evaluate.main([str(tmp_path / "model.keras"), "--data", str(out / "val-*.tfrecord"),
                       "--dataset", "synthetic", "--no-speed", "--no-ablation", "--figures", "0",
                       "--no-progress"])
    assert str(error.value).startswith(shard)
