"""Two workers on 127.0.0.1: `train_multi_worker` ends with identical weights, equal to one process
with the same global batch; a killed worker's run resumes from its checkpoint; `model.fit` still
fails.

Run as a script, this file is one worker: `python test_distribute_multiworker.py MODE INDEX PORTS OUT`
(INDEX "single": one process without a cluster).
"""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

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


def _run_workers(mode, tmp_path, single=False, timeout=240):
    """Runs two workers of `mode` (and, with `single`, the one-process reference at the same
    time: it needs no cluster); returns their exit codes and outputs, workers first."""
    ports = _free_ports(2)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
               TF_CPP_MIN_LOG_LEVEL="2")
    tasks = [(str(i), ",".join(map(str, ports)), f"worker{i}.npz") for i in range(2)]
    if single:
        tasks.append(("single", "", "single.npz"))
    procs = [subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), mode, index, cluster, str(tmp_path / out)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for index, cluster, out in tasks]
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


def test_two_workers_train_as_one_process_with_the_same_global_batch(tmp_path):
    codes, outputs = _run_workers("equal", tmp_path, single=True)
    assert codes == [0, 0, 0], "\n".join(o[-3000:] for o in outputs)
    two, other, one = (np.load(tmp_path / f"{name}.npz") for name in ("worker0", "worker1", "single"))
    start = np.load(tmp_path / "single.npz.start.npz")
    assert two["steps"] == other["steps"] == one["steps"] == 4
    for key in start.files:
        np.testing.assert_allclose(two[key], one[key], rtol=1e-4, atol=1e-5, err_msg=key)
        np.testing.assert_allclose(other[key], two[key], rtol=0, atol=1e-6, err_msg=key)
    # Not a trivial match: training moved every convolution kernel (batch norm is frozen here).
    kernels = [key for key in start.files if key.endswith("kernel")]
    assert kernels and all(not np.allclose(one[key], start[key]) for key in kernels)


def _train_command(data_dir, run_dir):
    return [sys.executable, os.path.join(ROOT, "train.py"), "--preset", "synthetic",
            "--strategy", "multiworker", "--data-dir", data_dir, "--run-dir", run_dir,
            "--no-evaluation", "--backbone-width", "8", "--head-filters", "16",
            "--crop-size", "32x64", "--batch-size", "2",
            "--steps-per-epoch", "2", "--epochs", "3", "--tensorboard-images", "0",
            # The smallest model a run trains (LR-ASPP at the full scale alone): the least graph
            # to trace in each of the four processes and in each validation; killing and
            # resuming depend neither on the head nor on the weightless fusion.
            "--head", "lraspp", "--fusion", "high"]


def _start_cluster(data_dir, run_dir, ports):
    procs = []
    for i in range(2):
        env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1",
                   TF_ENABLE_ONEDNN_OPTS="1", TF_CONFIG=json.dumps({
                       "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": i}}))
        procs.append(subprocess.Popen(_train_command(data_dir, run_dir), env=env, cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return procs


def _finish(procs, timeout):
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [p.returncode for p in procs], outputs


def test_a_killed_worker_stops_the_run_cleanly_and_a_restart_resumes_from_the_checkpoint(tmp_path):
    from synergyseg import data

    data_dir, run = str(tmp_path / "data"), str(tmp_path / "run")
    data.synthetic.generate(data_dir, num_train=8, num_val=1, height=32, width=64, seed=0,
                            num_shards=2, workers=1, log=None)
    procs = _start_cluster(data_dir, run, _free_ports(2))
    state = os.path.join(run, "backup", "state.json")
    deadline = time.time() + 300
    while time.time() < deadline and not os.path.exists(state) and procs[0].poll() is None:
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGKILL)  # worker 1 dies after epoch 1's checkpoint
    codes, outputs = _finish(procs, timeout=300)
    assert codes[1] == -signal.SIGKILL
    assert codes[0] != 0 and "a worker of the cluster stopped answering" in outputs[0], outputs[0][-3000:]
    with open(state) as f:
        saved = json.load(f)["epoch"]
    assert saved >= 1

    codes, outputs = _finish(_start_cluster(data_dir, run, _free_ports(2)), timeout=400)
    assert codes == [0, 0], "\n".join(o[-3000:] for o in outputs)
    assert f"Resuming after epoch {saved} of 3" in outputs[0]
    with open(os.path.join(run, "history.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2] and all(r["val_mean_iou"] for r in rows)
    for name in ("best.keras", "final.keras", "metrics.json"):
        assert os.path.isfile(os.path.join(run, name)), name
    assert not os.path.exists(os.path.join(run, "backup"))


def test_the_chief_validates_each_epoch_with_one_traced_step_and_scores_the_last_once(
        tmp_path, monkeypatch):
    """train()'s multi-worker path, in one process (the default strategy stands in for the
    cluster; this process is the chief): each epoch's validation reuses the step Keras traced for
    the first (a compile per epoch traced it again), and metrics.json is the last epoch's
    validation, not a pass of its own, equal to a numpy count over final.keras's predictions."""
    import keras
    import tensorflow as tf

    from synergyseg import data
    from synergyseg.run_folder import load_synergyseg_model
    from synergyseg.training import run as run_module
    from synergyseg.training.config import preset

    data_dir, run_dir = tmp_path / "data", tmp_path / "run"
    data.synthetic.generate(str(data_dir), num_train=4, num_val=2, height=32, width=64, seed=0,
                            num_shards=1, workers=1, log=None)
    monkeypatch.setattr(run_module, "make_strategy", lambda name: tf.distribute.get_strategy())
    passes, builds = [], []
    evaluate, make_test_function = keras.Model.evaluate, keras.Model.make_test_function

    def counted_evaluate(self, *args, **kwargs):
        passes.append(id(self))
        return evaluate(self, *args, **kwargs)

    def counted_make_test_function(self, force=False):
        if self.test_function is None or force:
            builds.append(id(self))
        return make_test_function(self, force)

    monkeypatch.setattr(keras.Model, "evaluate", counted_evaluate)
    monkeypatch.setattr(keras.Model, "make_test_function", counted_make_test_function)
    config = preset("synthetic", data_dir=str(data_dir), run_dir=str(run_dir), epochs=3,
                    steps_per_epoch=1, batch_size=2, crop_size=(32, 64), backbone_width=8,
                    head_filters=16, head="lraspp", fusion="high", tensorboard_images=0,
                    strategy="multiworker")
    result = run_module.train(config, log=lambda *a: None)
    assert result["steps"] == 3
    assert len(passes) == 3 and len(set(passes)) == 1  # one validation a epoch, one model
    assert builds == passes[:1]  # its evaluation step made (and traced) once
    with open(run_dir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[-1]["val_mean_iou"]) == result["metrics"]["mean_iou"]

    model = load_synergyseg_model(str(run_dir / "final.keras"))
    confusion = np.zeros((10, 10), np.int64)
    for image, label in data.eval_dataset(str(data_dir / "val-*")):
        predicted = np.asarray(model(image, training=False)).argmax(-1).ravel()
        label = label.numpy().ravel()
        keep = label != 255
        confusion += np.bincount(label[keep] * 10 + predicted[keep], minlength=100).reshape(10, 10)
    with open(run_dir / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["val_pixels"] == confusion.sum()
    union = confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
    present = [name for name, u in zip(data.SYNTHETIC.class_names, union) if u > 0]
    assert sorted(n for n, v in metrics["per_class_iou"].items() if v is not None) == sorted(present)
    iou = np.diag(confusion)[union > 0] / union[union > 0]
    np.testing.assert_allclose([metrics["per_class_iou"][name] for name in present], iou, rtol=1e-6)
    np.testing.assert_allclose(metrics["mean_iou"], iou.mean(), rtol=1e-6)


def _worker(mode, index, ports, out):
    if index != "single":
        os.environ["TF_CONFIG"] = json.dumps({
            "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports.split(",")]},
            "task": {"type": "worker", "index": int(index)}})
    from synergyseg.training.distribute import make_strategy, train_multi_worker

    # Before any other TensorFlow op: collectives are configured at program start.
    strategy = make_strategy("multiworker" if index != "single" else "one")
    import keras
    import tensorflow as tf

    from synergyseg.training.config import preset
    from synergyseg.training.recipe import compile_arguments, output_loss
    from synergyseg.training.run import build_model, make_optimizer

    config = preset("synthetic", backbone="resnet18", backbone_width=8, head_filters=16,
                    low_level_filters=8, learning_rate=0.05)
    if mode != "equal":
        # LR-ASPP at the full scale alone (the low-resolution branch not even computed, the
        # least graph to trace): these runs check the training loop, every worker's copy of the
        # weights and Keras's failure, none of which depends on the head or the weightless
        # fusion. The comparison with one process ("equal") keeps the paper's two-scale model.
        config = config.replace(head="lraspp", fusion="high")
    def worker_data(i):
        rng = np.random.default_rng(i)  # each worker reads different data
        return (rng.uniform(0, 255, (8, 32, 32, 3)).astype("float32"),
                rng.integers(0, 10, (8, 32, 32)).astype("int32"))

    if mode == "equal":
        config = config.replace(dropout=0.0)
        keras.utils.set_random_seed(1)
    if mode == "equal" and index == "single":
        # Global batch k: worker 0's batch k, then worker 1's (2 + 2 images).
        parts = [worker_data(0), worker_data(1)]
        x = np.concatenate([p[0].reshape(4, 2, 32, 32, 3) for p in parts], 1)
        y = np.concatenate([p[1].reshape(4, 2, 32, 32) for p in parts], 1)
        x, y = x.reshape(16, 32, 32, 3), y.reshape(16, 32, 32)
    else:
        x, y = worker_data(0 if index == "single" else int(index))
    with strategy.scope():
        model = build_model(config)
        if mode == "equal":
            # Batch norm normalises each replica's share with its own statistics, which differ
            # from the global batch's; frozen, the comparison isolates data split, loss scaling
            # and all-reduce.
            for layer in model._flatten_layers():
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = False
        optimizer = make_optimizer(config, total_steps=4)
        if mode != "fit":
            # Slots built before the first step, as train.py's multi-worker run does: a first
            # step that creates them makes TensorFlow trace the whole step twice.
            optimizer.build(model.trainable_variables)
    weights = lambda: {v.path.replace("/", "."): np.asarray(v.numpy()) for v in model.weights}
    if mode == "fit":
        model.compile(optimizer=optimizer, **compile_arguments(10))
        model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(2).repeat(), epochs=2,
                  steps_per_epoch=2, verbose=0)
        return
    np.savez(out + ".start.npz", **weights())
    dataset_fn = lambda context: tf.data.Dataset.from_tensor_slices((x, y)).batch(
        context.get_per_replica_batch_size(4)).repeat()
    # The default recipe's loss: with two scales, the fused map's plus 0.4 x each scale's.
    train_multi_worker(model, optimizer, output_loss(config.aux_weight), dataset_fn, epochs=2,
                       steps_per_epoch=2, strategy=strategy, log=lambda *a: None)
    np.savez(out, steps=int(optimizer.iterations.numpy()), **weights())


if __name__ == "__main__":
    _worker(*sys.argv[1:5])
