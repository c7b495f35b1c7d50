"""`make_strategy`: which tf.distribute strategy `--strategy` gives on one device, several GPUs or
several machines (the GPUs are faked by listing: this machine has none)."""

import pytest
import tensorflow as tf

from synergyseg.training import distribute
from synergyseg.training.distribute import make_strategy


def _gpus(monkeypatch, count):
    real = tf.config.list_physical_devices
    fake = [tf.config.PhysicalDevice(f"/physical_device:GPU:{i}", "GPU") for i in range(count)]
    monkeypatch.setattr(distribute.tf.config, "list_physical_devices",
                        lambda kind=None: fake if kind == "GPU" else real(kind))


def test_auto_is_the_default_strategy_on_one_device_and_mirrored_over_several_gpus(monkeypatch):
    _gpus(monkeypatch, 0)
    assert make_strategy("auto") is tf.distribute.get_strategy()
    _gpus(monkeypatch, 1)
    assert make_strategy("auto") is tf.distribute.get_strategy()
    _gpus(monkeypatch, 2)
    assert isinstance(make_strategy("auto"), tf.distribute.MirroredStrategy)


def test_one_and_mirrored_and_the_refusals(monkeypatch):
    _gpus(monkeypatch, 0)
    one = make_strategy("one")
    assert isinstance(one, tf.distribute.OneDeviceStrategy)
    assert one.extended.worker_devices[0].endswith("CPU:0")
    assert isinstance(make_strategy("mirrored"), tf.distribute.MirroredStrategy)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs the TF_CONFIG environment variable"):
        make_strategy("multiworker")
    with pytest.raises(ValueError, match="strategy='tpu': expected auto, mirrored, multiworker or one"):
        make_strategy("tpu")
