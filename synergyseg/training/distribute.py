"""tf.distribute strategies for `--strategy`, and the multi-worker training loop.

`model.fit` runs under the default strategy (one device), `OneDeviceStrategy` and
`MirroredStrategy` (several GPUs of one machine). Under `MultiWorkerMirroredStrategy`
it fails with Keras 3.15 / TF 2.21 ("Attempt to convert a value (PerReplica:...) with an
unsupported type", keras-team/keras#20585; `tests/test_distribute_multiworker.py` shows it),
so several machines train with `train_multi_worker`: a plain custom step under the same
strategy (gradients all-reduced by the Keras optimizer), which needs no private Keras code.
Its checkpoints are the run's `RunBackup` (backup.py), committed by the chief after each epoch.
"""

import json
import os

import keras
import numpy as np
import tensorflow as tf


def make_strategy(name="auto"):
    """The tf.distribute strategy for `--strategy` auto|mirrored|multiworker|one.

    auto: MirroredStrategy over all GPUs when there are several, else the default strategy.
    multiworker: MultiWorkerMirroredStrategy; reads the cluster from the TF_CONFIG variable.
    """
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "strategy='multiworker' needs the TF_CONFIG environment variable (cluster and "
                "task index of this worker); see docs/distributed.md, 'Several machines'")
        # Checked first: listing logical devices would initialise TF before collectives can be set.
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices("GPU")
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "one":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    raise ValueError(f"strategy={name!r}: expected auto, mirrored, multiworker or one")


def is_chief(strategy):
    """True on the worker that writes files (worker 0, or the only process)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type in ("chief", None) or (
        resolver.task_type == "worker" and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict())


def task_index():
    """This worker's index from TF_CONFIG (0 without one)."""
    return int(json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {}).get("index", 0))


# What TensorFlow raises on the surviving workers when a peer dies: MultiWorkerMirroredStrategy's
# health check aborts the pending collective (UNAVAILABLE), or the collective itself fails.
WORKER_LOST_ERRORS = (tf.errors.UnavailableError, tf.errors.CancelledError,
                      tf.errors.DeadlineExceededError, tf.errors.AbortedError,
                      tf.errors.InternalError)


class WorkerLostError(RuntimeError):
    """A worker of a multi-worker run stopped answering; the run can resume from its backup."""


def _non_trainable_floats(model):
    return [v for v in model.non_trainable_variables if "float" in str(v.dtype)]


def train_multi_worker(model, optimizer, loss_fn, dataset_fn, *, epochs, steps_per_epoch,
                       strategy, callbacks=(), initial_epoch=0, backup=None, log=print):
    """Trains `model` with a custom step under `strategy` (MultiWorkerMirroredStrategy).

    Each replica computes the loss of its share of the global batch, which a Keras mean loss
    divides by the number of replicas under a strategy, so the summed gradient the optimizer
    all-reduces is the global-batch mean (a test compares with one process). Batch
    norm statistics stay per replica during an epoch (as in PyTorch DDP without SyncBN) and are
    averaged over replicas at each epoch end, so every worker ends with the same weights.

    Args:
        model, optimizer: created inside `strategy.scope()`.
        loss_fn: `(labels, prediction) -> loss` made of Keras losses with a mean reduction (e.g.
            `recipe.output_loss(aux_loss_weight)`): Keras scales each by 1 / replicas under the
            strategy.
        dataset_fn: `input_context -> tf.data.Dataset` of (image, label) per-replica batches,
            repeating (see `tf.distribute.Strategy.distribute_datasets_from_function`).
        callbacks: Keras callbacks; they get `on_epoch_begin/end` with {"loss", "learning_rate"}
            (an `EpochBackup` among them commits the checkpoint; it must run on every worker).
        initial_epoch: the first epoch to run (after a restore); `dataset_fn` must start there.
        backup: the run's restored `RunBackup`, named in the error when a worker is lost.

    Returns:
        The mean training loss of each epoch run here.

    Raises:
        WorkerLostError: another worker died; restarting all workers resumes from the backup.
    """
    dataset = strategy.distribute_datasets_from_function(dataset_fn)

    def replica_step(image, label):
        with tf.GradientTape() as tape:
            prediction = model(image, training=True)
            # A Keras mean loss is already divided by the replica count under a strategy
            # (keras.losses.loss.scale_loss_for_distribution); dividing again, as this loop did
            # before, halved the gradient on two workers.
            scaled = loss_fn(label, prediction)
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return scaled

    @tf.function
    def train_steps(iterator, steps):
        total = tf.constant(0.0)
        for _ in tf.range(steps):
            per_replica = strategy.run(replica_step, args=next(iterator))
            total += strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
        return total / tf.cast(steps, tf.float32)

    stats = _non_trainable_floats(model)

    @tf.function
    def average_statistics():
        def replica_fn():
            context = tf.distribute.get_replica_context()
            return context.all_reduce(tf.distribute.ReduceOp.MEAN, [tf.identity(v.value) for v in stats])

        averaged = strategy.experimental_local_results(strategy.run(replica_fn))[0]
        for variable, value in zip(stats, averaged):
            variable.assign(value)

    callback_list = keras.callbacks.CallbackList(list(callbacks), model=model)
    callback_list.on_train_begin()
    iterator = iter(dataset)
    losses = []
    for epoch in range(initial_epoch, epochs):
        callback_list.on_epoch_begin(epoch)
        try:
            loss = float(train_steps(iterator, tf.constant(steps_per_epoch)))
            if stats:
                average_statistics()
        except WORKER_LOST_ERRORS as e:
            where = backup.describe() if backup is not None else ""
            raise WorkerLostError(
                f"Epoch {epoch + 1}: a worker of the cluster stopped answering "
                f"({type(e).__name__}: {str(e).splitlines()[0][:300]}). {where} Start every "
                "worker again with the same command to resume from there.") from e
        if not np.isfinite(loss):
            raise FloatingPointError(f"Training loss became {loss} in epoch {epoch + 1}")
        losses.append(loss)
        lr = optimizer.learning_rate
        logs = {"loss": loss, "learning_rate": float(lr.numpy() if hasattr(lr, "numpy") else lr)}
        log(f"epoch {epoch + 1}/{epochs}: loss {loss:.4f}")
        callback_list.on_epoch_end(epoch, logs)
    callback_list.on_train_end()
    return losses
