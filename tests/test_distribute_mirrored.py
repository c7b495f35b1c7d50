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

out = sys.argv[1]  # writes <out>1.npz and <out>2.npz
# The fused loss alone (one output, Keras's list metrics): the per-scale losses go through the same
# fit, and multi-worker training compares them with one process (test_distribute_multiworker.py).
config = preset("synthetic", backbone="resnet18", backbone_width=8, head_filters=16,
                low_level_filters=8, dropout=0.0, learning_rate=0.05, aux_loss_weight=0.0)
rng = np.random.default_rng(0)
x = rng.uniform(0, 255, (8, 32, 32, 3)).astype("float32")
y = rng.integers(0, 10, (8, 32, 32)).astype("int32")
# Both runs in this one process (one TensorFlow start-up instead of two); each starts again from
# the same seed, so both build the same initial weights.
for replicas in (1, 2):
    keras.utils.set_random_seed(1)
    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(replicas)])
    with strategy.scope():
        model = build_model(config)
        # Batch norm normalises each replica's share with its own statistics, which differ from
        # the global batch's; freeze it so the comparison isolates data split, loss scaling and
        # all-reduce.
        for layer in model._flatten_layers():
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
        model.compile(optimizer=make_optimizer(config, total_steps=4), **compile_arguments(10))
    history = model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(4), epochs=2, verbose=0)
    np.savez(f"{out}{replicas}.npz", loss=np.array(history.history["loss"]),
             miou=np.array(history.history["mean_iou"]),
             **{f"w{i}": w for i, w in enumerate(model.get_weights())})
    print("replicas", strategy.num_replicas_in_sync)
"""


def _run(out):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", _SCRIPT, str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "replicas 1" in done.stdout and "replicas 2" in done.stdout, done.stdout
    return np.load(f"{out}1.npz"), np.load(f"{out}2.npz")


def test_two_replicas_match_one_device_with_the_same_global_batch(tmp_path):
    one, two = _run(tmp_path / "replicas")
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5)
    np.testing.assert_allclose(two["miou"], one["miou"], rtol=1e-5)
    moved = 0.0
    for key in one.files:
        if key.startswith("w"):
            np.testing.assert_allclose(two[key], one[key], rtol=1e-4, atol=1e-6, err_msg=key)
            moved = max(moved, float(np.abs(one[key]).max()))
    # Not a trivial match: training changed the loss between the two epochs.
    assert abs(one["loss"][1] - one["loss"][0]) > 1e-3 and moved > 0


# Batch norm left trainable: one step on two replicas whose halves of the batch differ.
_BN_SCRIPT = r"""
import sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from synergyseg.training.config import preset
from synergyseg.training.recipe import compile_arguments
from synergyseg.training.run import make_optimizer

config = preset("synthetic", learning_rate=0.01)
rng = np.random.default_rng(0)
# The second replica's half is brighter and more varied: its statistics differ from the first's.
x = np.concatenate([rng.uniform(0, 100, (2, 8, 8, 3)), rng.uniform(50, 255, (2, 8, 8, 3))]).astype("float32")
y = rng.integers(0, 10, (4, 8, 8)).astype("int32")
out = {}
for replicas in (1, 2):
    keras.utils.set_random_seed(1)
    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(replicas)])
    with strategy.scope():
        inputs = keras.Input((None, None, 3))
        features = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
        normalized = keras.layers.BatchNormalization(name="bn")(features)
        outputs = keras.layers.Conv2D(10, 1, activation="softmax")(normalized)
        model = keras.Model(inputs, outputs)
        model.compile(optimizer=make_optimizer(config, total_steps=1), **compile_arguments(10))
    # The batch norm's input before the step (the step changes the conv, not this input's stats).
    out[f"features{replicas}"] = keras.Model(inputs, features).predict(x, verbose=0)
    model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(4), epochs=1, verbose=0)
    bn = model.get_layer("bn")
    out[f"moving_mean{replicas}"] = keras.ops.convert_to_numpy(bn.moving_mean)
    out[f"moving_variance{replicas}"] = keras.ops.convert_to_numpy(bn.moving_variance)
    out["momentum"] = np.array(bn.momentum)
np.savez(sys.argv[2], **out)
print("replicas", 2)
"""


def test_batch_norm_uses_each_replicas_own_statistics(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", _BN_SCRIPT, "2", str(tmp_path / "bn.npz")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = np.load(tmp_path / "bn.npz")
    np.testing.assert_allclose(out["features1"], out["features2"], rtol=1e-5)
    features, momentum = out["features1"], float(out["momentum"])
    halves = features[:2], features[2:]  # what each replica sees of the global batch of 4

    def moving(mean, variance):  # Keras: moving = momentum * moving + (1 - momentum) * batch
        return momentum * 0.0 + (1 - momentum) * mean, momentum * 1.0 + (1 - momentum) * variance

    # Each replica's own (biased) batch mean and variance, and the global batch's.
    first, second = (moving(h.mean((0, 1, 2)), h.var((0, 1, 2))) for h in halves)
    whole = moving(features.mean((0, 1, 2)), features.var((0, 1, 2)))
    # The halves differ far beyond float error, so the three candidates are told apart.
    for a, b in [(first, whole), (second, whole), (first, second)]:
        assert np.abs(a[1] - b[1]).min() > 0.05 * np.abs(b[1]).max(), (a[1], b[1])
    # Two replicas: each normalises with its own share's statistics (not synchronized), and the
    # moving averages kept (for inference, best.keras) are the first replica's alone; measured,
    # Keras 3 / TF 2.21 neither averages nor all-reduces them across replicas.
    np.testing.assert_allclose(out["moving_mean2"], first[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out["moving_variance2"], first[1], rtol=1e-4)
    # One device: the global batch's statistics.
    np.testing.assert_allclose(out["moving_mean1"], whole[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out["moving_variance1"], whole[1], rtol=1e-4)
