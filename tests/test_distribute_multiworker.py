"""Two workers on 127.0.0.1: `train_multi_worker` ends with identical weights; `model.fit` still fails.

Run as a script, this file is one worker: `python test_distribute_multiworker.py MODE INDEX PORTS OUT`.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UPSTREAM = "unsupported type"  # keras-team/keras#20585


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _run_workers(mode, tmp_path, timeout=240):
    ports = _free_ports(2)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
               TF_CPP_MIN_LOG_LEVEL="2")
    procs = [subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), mode, str(i), ",".join(map(str, ports)),
         str(tmp_path / f"worker{i}.npz")], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:  # never leave a worker behind, even when one hangs or the test fails
            if p.poll() is None:
                p.kill()
                p.wait()
    return [p.returncode for p in procs], outputs


def test_train_multi_worker_gives_both_workers_the_same_weights(tmp_path):
    codes, outputs = _run_workers("custom", tmp_path)
    assert codes == [0, 0], "\n".join(o[-3000:] for o in outputs)
    a, b = np.load(tmp_path / "worker0.npz"), np.load(tmp_path / "worker1.npz")
    start = np.load(tmp_path / "worker0.npz.start.npz")
    assert a["steps"] == b["steps"] == 4
    changed = 0
    for key in start.files:
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-6, err_msg=key)
        changed += not np.allclose(a[key], start[key])
    assert changed > len(start.files) // 2  # training moved most weights, identically on both


def test_keras_fit_under_multi_worker_strategy_still_fails_upstream(tmp_path):
    """If this fails, keras-team/keras#20585 is fixed: `model.fit` can replace train_multi_worker."""
    codes, outputs = _run_workers("fit", tmp_path)
    assert all(UPSTREAM in o for o in outputs) and codes != [0, 0], (
        "model.fit under MultiWorkerMirroredStrategy no longer fails as in keras#20585:\n"
        + "\n".join(o[-2000:] for o in outputs))


def _worker(mode, index, ports, out):
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports.split(",")]},
        "task": {"type": "worker", "index": int(index)}})
    from synergyseg.training.distribute import make_strategy, train_multi_worker

    # Before any other TensorFlow op: collectives are configured at program start.
    strategy = make_strategy("multiworker")
    import tensorflow as tf

    from synergyseg.training.config import preset
    from synergyseg.training.recipe import compile_arguments, segmentation_loss
    from synergyseg.training.run import build_model, make_optimizer

    config = preset("synthetic", backbone="resnet18", backbone_width=8, head_filters=16,
                    low_level_filters=8, learning_rate=0.05)
    rng = np.random.default_rng(int(index))  # each worker reads different data
    x = rng.uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, (8, 32, 32)).astype("int32")
    with strategy.scope():
        model = build_model(config)
        optimizer = make_optimizer(config, total_steps=4)
    weights = lambda: {v.path.replace("/", "."): np.asarray(v.numpy()) for v in model.weights}
    if mode == "fit":
        model.compile(optimizer=optimizer, **compile_arguments(10))
        model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(2).repeat(), epochs=2,
                  steps_per_epoch=2, verbose=0)
        return
    np.savez(out + ".start.npz", **weights())
    dataset_fn = lambda context: tf.data.Dataset.from_tensor_slices((x, y)).batch(
        context.get_per_replica_batch_size(4)).repeat()
    train_multi_worker(model, optimizer, segmentation_loss(), dataset_fn, epochs=2,
                       steps_per_epoch=2, strategy=strategy, log=lambda *a: None)
    np.savez(out, steps=int(optimizer.iterations.numpy()), **weights())


if __name__ == "__main__":
    _worker(*sys.argv[1:5])
