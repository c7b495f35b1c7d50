"""MirroredStrategy on two logical CPUs trains exactly as one device with the same global batch."""

import os
import subprocess
import sys

import numpy as np

# Run in a subprocess: logical devices must be configured before TensorFlow initialises them.
_SCRIPT = r"""
import os, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from synergyseg.training.config import preset
from synergyseg.training.recipe import compile_arguments
from synergyseg.training.run import build_model, make_optimizer

replicas, out = int(sys.argv[1]), sys.argv[2]
config = preset("synthetic", backbone="resnet18", backbone_width=8, head_filters=16,
                low_level_filters=8, dropout=0.0, learning_rate=0.05)
rng = np.random.default_rng(0)
x = rng.uniform(0, 255, (8, 32, 32, 3)).astype("float32")
y = rng.integers(0, 10, (8, 32, 32)).astype("int32")
keras.utils.set_random_seed(1)
strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(replicas)])
with strategy.scope():
    model = build_model(config)
    # Batch norm normalises each replica's share with its own statistics, which differ from the
    # global batch's; freeze it so the comparison isolates data split, loss scaling and all-reduce.
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    model.compile(optimizer=make_optimizer(config, total_steps=4), **compile_arguments(10))
history = model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(4), epochs=2, verbose=0)
np.savez(out, loss=np.array(history.history["loss"]), miou=np.array(history.history["mean_iou"]),
         **{f"w{i}": w for i, w in enumerate(model.get_weights())})
print("replicas", strategy.num_replicas_in_sync)
"""


def _run(replicas, out):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", _SCRIPT, str(replicas), str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"replicas {replicas}" in done.stdout
    return np.load(out)


def test_two_replicas_match_one_device_with_the_same_global_batch(tmp_path):
    one = _run(1, tmp_path / "one.npz")
    two = _run(2, tmp_path / "two.npz")
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5)
    np.testing.assert_allclose(two["miou"], one["miou"], rtol=1e-5)
    moved = 0.0
    for key in one.files:
        if key.startswith("w"):
            np.testing.assert_allclose(two[key], one[key], rtol=1e-4, atol=1e-6, err_msg=key)
            moved = max(moved, float(np.abs(one[key]).max()))
    # Not a trivial match: training changed the loss between the two epochs.
    assert abs(one["loss"][1] - one["loss"][0]) > 1e-3 and moved > 0
