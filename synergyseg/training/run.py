"""The training run behind `train.py`: data, model, the paper's recipe on `model.fit`, the run folder.

    from synergyseg.training.config import preset
    from synergyseg.training.run import train
    result = train(preset("synthetic", epochs=2, run_dir="runs/try"))

Run folder: config.json, best.keras (best val_mean_iou), final.keras, history.csv,
training_curves.png, metrics.json, backup/ (the last finished epoch's state, see backup.py;
removed once final.keras and metrics.json are written), tensorboard/.
"""

import glob
import json
import os
import time

import keras
import numpy as np
import tensorflow as tf

import synergyseg
from synergyseg.training import callbacks as cb
from synergyseg.training.backup import STATE, RunBackup
from synergyseg.atomic import write_json
from synergyseg import data
from synergyseg.run_folder import RunFolder, save_model
from synergyseg.training.config import aux_weight, dataset_info
from synergyseg.training.distribute import is_chief, make_strategy, train_multi_worker
from synergyseg.models.names import LOSS_OUTPUTS
from synergyseg.training import recipe
from synergyseg.training.recipe import compile_arguments, mean_iou, segmentation_loss


def ensure_synthetic_data(config, log=print):
    """Writes the synthetic set into `config.data_dir` unless its shards are already there."""
    if config.dataset != "synthetic" or (glob.glob(config.train_files) and glob.glob(config.val_files)):
        return
    height, width = config.synthetic_size
    log(f"Generating the synthetic set in {config.data_dir} ({config.synthetic_train} train, "
        f"{config.synthetic_val} val, {height}x{width})")
    data.synthetic.generate(config.data_dir, num_train=config.synthetic_train,
                            num_val=config.synthetic_val, height=height, width=width,
                            seed=config.seed, log=log)


def count_examples(file_pattern):
    """Number of records in the TFRecord files of `file_pattern` (reads them once)."""
    files = data.pipeline.list_files(file_pattern)
    return int(tf.data.TFRecordDataset(files).reduce(np.int64(0), lambda n, _: n + 1))


def build_model(config, info=None):
    """The SynergySeg model of `config` (dict outputs when the auxiliary loss is on).

    `info` (default: the config's dataset) gives the class names and colours saved with the model.
    """
    info = info or dataset_info(config)
    head_kwargs = dict(backbone_width=config.backbone_width, head_filters=config.head_filters)
    if config.head == "deeplabv3plus":
        head_kwargs.update(low_level_filters=config.low_level_filters, dropout=config.dropout,
                           separable=config.separable)
    return synergyseg.build_synergyseg(
        config.num_classes, backbone=config.backbone, output_stride=config.output_stride,
        fusion=config.fusion, backbone_weights=config.backbone_weights,
        scale_outputs=bool(config.aux_weight), head=config.head, fuse_at=config.fuse_at,
        class_names=info.class_names, palette=info.colors, **head_kwargs)


def training_model(model):
    """`model` itself, or with dict outputs: only those that get a loss ("fused", "s_lo", "s_hi")."""
    if not isinstance(model.output, dict):
        return model
    return keras.Model(model.input, {k: model.output[k] for k in LOSS_OUTPUTS}, name=model.name)


def inference_model(model, trained=None):
    """A single-output model sharing `model`'s weights (what best/final.keras hold).

    `trained`: the model `fit` trains (`training_model(model)`); when it is compiled, the served
    model is compiled with its optimizer, so the saved file keeps the optimizer's state (step,
    schedule, slots) as a run without the per-scale losses does.
    """
    if not model.scale_outputs:
        return model
    served = model.with_fusion()
    if trained is not None and trained.compiled:
        served.compile(optimizer=trained.optimizer, **compile_arguments(model.num_classes))
    return served


def make_optimizer(config, total_steps):
    """The run's SGD with polynomial (warm-up) decay over `total_steps` (see `recipe.make_optimizer`)."""
    return recipe.make_optimizer(
        total_steps, learning_rate=config.learning_rate, end_learning_rate=config.end_learning_rate,
        power=config.poly_power, warmup_steps=config.warmup_steps, momentum=config.momentum,
        weight_decay=config.weight_decay, clipnorm=config.clipnorm)


def steps_per_epoch(config, global_batch, log=print):
    if config.steps_per_epoch:
        return config.steps_per_epoch
    examples = count_examples(config.train_files)
    steps = max(1, examples // global_batch)
    log(f"{examples} training examples, global batch {global_batch}: {steps} steps per epoch")
    return steps


def _train_dataset(config, global_batch, steps, initial_epoch=0, input_context=None):
    """Batches of epochs initial_epoch.. (each a function of the seed and its index alone)."""
    return data.pipeline.train_epochs(
        config.train_files, global_batch, config.crop_size, steps_per_epoch=steps,
        epochs=config.epochs, initial_epoch=initial_epoch, scale_range=config.scale_range,
        flip=config.flip, jitter=config.jitter, seed=config.seed, input_context=input_context)


def _with_dict_labels(ds, model):
    if not isinstance(model.output, dict):
        return ds
    return ds.map(lambda x, y: (x, {name: y for name in model.output}))


def val_dataset(config, batch_size=1):
    """The validation batches, with their count known to tf.data.

    Keras learns an unknown count only by running out of data, and then warns "Your input ran out
    of data" after every validation; a known count makes each epoch's pass end cleanly.
    """
    examples = count_examples(config.val_files)
    if config.val_limit is not None:
        examples = min(examples, config.val_limit)
    ds = data.eval_dataset(config.val_files, batch_size, resize_factor=config.eval_resize_factor,
                           limit=config.val_limit)
    return ds.apply(tf.data.experimental.assert_cardinality(-(-examples // batch_size)))


def _first_val_examples(config, count):
    images, labels = [], []
    for image, label in val_dataset(config).take(count):
        images.append(image[0].numpy())
        labels.append(label[0].numpy())
    return np.stack(images), np.stack(labels)


def _best_so_far(rows, key="val_mean_iou"):
    """Best `key` a resumed run already recorded, so its first new epoch cannot overwrite best.keras."""
    values = [row[key] for row in rows if key in row and np.isfinite(row[key])]
    return max(values) if values else None


def make_callbacks(config, model, fit_model, info, backup, extra=()):
    """The run's callbacks, in the order they must run (per-class IoU before the backup's commit).

    `backup` is the run's restored `RunBackup`; its commit writes history.csv.
    """
    run = RunFolder(config.run_dir)
    history_csv = run.history
    callbacks = []
    if fit_model is not model:
        callbacks.append(cb.AliasLogs({"fused_mean_iou": "mean_iou"}))
    callbacks += [
        cb.PerClassIoU(info.class_names),
        cb.LogLearningRate(),
        cb.TerminateOnNaN(backup),
        cb.SafeModelCheckpoint(run.best, saved_model=inference_model(model, fit_model),
                               monitor="val_mean_iou", mode="max", save_best_only=True,
                               initial_value_threshold=_best_so_far(backup.rows)),
        cb.EpochBackup(backup),
        keras.callbacks.TensorBoard(run.tensorboard, write_graph=False),
    ]
    if config.tensorboard_images:
        images, labels = _first_val_examples(config, config.tensorboard_images)
        callbacks.append(cb.ValidationImages(
            images, labels, info.colors, run.tensorboard,
            model.with_fusion(scale_outputs=True)))
    callbacks.append(cb.TrainingCurves(history_csv, run.curves))
    return callbacks + list(extra)


def _has_progress(run):
    """True once a `RunFolder` holds a finished epoch (a backup state) or a finished run."""
    return any(os.path.exists(path) for path in (
        os.path.join(run.backup, STATE), run.final,
        # Keras's BackupAndRestore, used by earlier versions.
        os.path.join(run.backup, "training_metadata.json")))


# Compared as paths: "data/x/" and "data/x" name one folder.
_PATH_FIELDS = ("data_dir", "train_pattern", "val_pattern", "mapillary_config", "backbone_weights")


def config_differences(config, saved):
    """`["field: <value in saved> there, <value in config> now", ...]` between `config` and the
    config.json at `saved`; empty when they are one run's configuration.

    `run_dir` is not compared: a run folder is the one it is now, however its path is typed
    (`runs/x/`, `runs/x`) and wherever it was moved. A field that `saved` lacks (written by an
    earlier synergyseg, before the field existed) counts as its default, the behaviour that run had.
    """
    with open(saved) as f:
        previous = json.load(f)
    current = json.loads(json.dumps(config.to_dict()))
    defaults = json.loads(json.dumps(type(config)().to_dict()))
    # The weight each trains with: None (the default) is 0.4 or 0 by fusion; a config.json from
    # before the default existed holds its weight (0, the paper's recipe, when it predates the field).
    current["aux_loss_weight"] = config.aux_weight
    previous["aux_loss_weight"] = aux_weight(previous.get("aux_loss_weight", 0.0),
                                             previous.get("fusion", defaults["fusion"]))
    differences = []
    for name in sorted(set(previous) | set(current)):
        if name == "run_dir":
            continue
        saved_value, value = previous.get(name, defaults.get(name)), current.get(name)
        there, now = saved_value, value
        if name in _PATH_FIELDS and isinstance(there, str) and isinstance(now, str):
            there, now = os.path.normpath(there), os.path.normpath(now)
        if there != now:
            differences.append(f"{name}: {saved_value!r} there, {value!r} now")
    return differences


def _same_config(config, saved):
    """True when the config.json at `saved` is `config`'s run (see `config_differences`)."""
    return not config_differences(config, saved)


def training_finished(config):
    """True when `config.run_dir` holds the finished training of `config` (final.keras and
    metrics.json, no backup): then only train.py's evaluation into RUN/evaluation may be left."""
    run = RunFolder(config.run_dir)
    return (os.path.isfile(run.final) and os.path.isfile(run.metrics)
            and not os.path.isdir(run.backup) and os.path.isfile(run.config_json)
            and _same_config(config, run.config_json))


def _check_run_dir(config, log=print):
    """Refuses a run folder that holds another run, or a finished one (nothing is overwritten).

    A folder whose run never finished an epoch holds nothing to keep: a corrected command may
    start again there, with another configuration too.
    """
    run = RunFolder(config.run_dir)
    saved = run.config_json
    if os.path.exists(saved) and not _has_progress(run):
        log(f"{config.run_dir}: no epoch finished there yet; starting the run afresh")
        for path in (run.config_json, run.history, run.best):
            if os.path.exists(path):
                os.remove(path)
        return
    differences = config_differences(config, saved) if os.path.exists(saved) else []
    if differences:
        raise ValueError(
            f"{config.run_dir} holds a run with another configuration ({saved}: "
            f"{'; '.join(differences)}); pass another --run-dir, or --config {saved} to resume "
            "that run")
    if os.path.exists(run.final) and not os.path.isdir(run.backup):
        raise ValueError(
            f"{config.run_dir} holds a finished run (final.keras, metrics.json); pass another "
            f"--run-dir to train again, or score this one with: python evaluate.py {config.run_dir}")
    if os.path.exists(os.path.join(run.backup, "training_metadata.json")):
        raise ValueError(
            f"{config.run_dir}/backup was written by an earlier synergyseg (Keras BackupAndRestore), "
            "which this version cannot resume; pass another --run-dir")


def _check_inputs(config):
    """Fails on missing data or weights files before anything is written into the run folder."""
    data.list_files(config.train_files)
    data.list_files(config.val_files)
    if config.backbone_weights and not os.path.isfile(config.backbone_weights):
        raise FileNotFoundError(f"backbone_weights file not found: {config.backbone_weights}")


def _write_config(config):
    os.makedirs(config.run_dir, exist_ok=True)
    config.to_json(RunFolder(config.run_dir).config_json)


def _validation_model(model, config):
    """`inference_model(model)` compiled to score the validation set (see `_validation_confusion`).

    Compile it once and score it as often as needed: each compile makes Keras trace its
    evaluation step again.
    """
    model = inference_model(model)
    # A loss too: Keras's evaluate refuses a freshly built model compiled with metrics only.
    model.compile(optimizer=None, loss=segmentation_loss(), metrics=[mean_iou(config.num_classes)],
                  jit_compile=False)
    return model


def _validation_confusion(scoring_model, config):
    """The (true, predicted) confusion matrix of a pass of `_validation_model`'s model."""
    scoring_model.evaluate(val_dataset(config), verbose=0)
    return cb.find_mean_iou(scoring_model).total_cm.numpy()


def evaluate_model(model, config, info, log=print):
    """Scores `model` on the validation set: `validation_metrics` of a new pass (metrics.json)."""
    return validation_metrics(_validation_confusion(_validation_model(model, config), config),
                              info, log)


def validation_metrics(confusion, info, log=print):
    """Validation mean IoU, per-class IoU and the mIoU of a constant prediction (metrics.json),
    from a validation confusion matrix."""
    per_class = cb.iou_per_class(confusion)
    pixels = confusion.sum(1)
    present = int((pixels > 0).sum())
    # Predicting the most frequent class everywhere: its IoU is its pixel share, others score 0.
    constant = float(pixels.max() / pixels.sum() / present) if present else float("nan")
    metrics = {
        "mean_iou": float(np.nanmean(per_class)),
        "constant_prediction_mean_iou": constant,
        "per_class_iou": {name: (None if np.isnan(v) else float(v))
                          for name, v in zip(info.class_names, per_class)},
        "val_pixels": int(pixels.sum()),
    }
    log(f"validation mean IoU {metrics['mean_iou']:.4f} (constant prediction {constant:.4f})")
    return metrics


def train(config, *, extra_callbacks=(), log=print):
    """Trains, evaluates and fills `config.run_dir`; resumes from RUN/backup if a run was killed.

    Returns a dict: "history" (per-epoch logs of this call), "metrics" (metrics.json),
    "steps" (optimizer steps in total), "seconds". A corrupt training or validation shard,
    wherever it is read (counting, training, validating, the final scores), raises a ValueError
    naming the file and the record.
    """
    with data.pipeline.naming_bad_records(config.train_files, config.val_files):
        return _train(config, extra_callbacks, log)


def _train(config, extra_callbacks, log):
    start = time.time()
    # First: MultiWorkerMirroredStrategy must be created before any other TensorFlow op.
    strategy = make_strategy(config.strategy)
    if config.mixed_precision and config.jit_compile and not tf.config.list_physical_devices("GPU"):
        # XLA's CPU backend rejects float16 graphs ("mixed precision is disallowed" in ReluGrad).
        raise ValueError("mixed_precision and jit_compile cannot be combined on a CPU-only machine; "
                         "drop one of them (both work together on GPUs)")
    info = dataset_info(config)
    if is_chief(strategy):  # the other workers of a multi-worker run write nothing there
        _check_run_dir(config, log)
    ensure_synthetic_data(config, log)
    _check_inputs(config)
    keras.utils.set_random_seed(config.seed)
    previous_policy = keras.mixed_precision.global_policy()
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        global_batch = config.batch_size * strategy.num_replicas_in_sync
        steps = steps_per_epoch(config, global_batch, log)
        with strategy.scope():
            model = build_model(config, info)
            fit_model = training_model(model)
            optimizer = make_optimizer(config, steps * config.epochs)
        if config.strategy == "multiworker":
            return _train_multi_worker(config, model, optimizer, strategy, steps, info, start, log)
        with strategy.scope():
            fit_model.compile(optimizer=optimizer, jit_compile=config.jit_compile,
                              run_eagerly=config.run_eagerly,
                              **compile_arguments(config.num_classes, config.aux_weight))
            # Built now so the backup can restore its slots and step before the first batch.
            optimizer.build(fit_model.trainable_variables)
        # The model and the data are in place: only now does the run folder get its config.
        _write_config(config)
        run = RunFolder(config.run_dir)
        backup = RunBackup(run.backup, list(fit_model.variables) + list(optimizer.variables),
                           history_csv=run.history)
        initial_epoch, _ = backup.restore()
        if initial_epoch:
            log(f"Resuming after epoch {initial_epoch} of {config.epochs} from {backup.directory}")
        val_batch = strategy.num_replicas_in_sync
        callbacks = make_callbacks(config, model, fit_model, info, backup, extra_callbacks)
        history = fit_model.fit(
            _with_dict_labels(_train_dataset(config, global_batch, steps, initial_epoch),
                              fit_model),
            epochs=config.epochs, initial_epoch=initial_epoch, steps_per_epoch=steps,
            validation_data=_with_dict_labels(val_dataset(config, val_batch), fit_model),
            callbacks=callbacks, verbose=2,
            shuffle=False)  # the tf.data pipeline shuffles; fit's own flag does not apply to it
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    save_model(inference_model(model, fit_model), run.final)
    per_class = next(c for c in callbacks if isinstance(c, cb.PerClassIoU))
    if per_class.val_epoch == config.epochs - 1:
        # The last epoch validated exactly these weights: score once, from its confusion matrix.
        metrics = validation_metrics(per_class.val_confusion, info, log)
    else:  # resumed after the last epoch, whose counts died with the killed process
        metrics = evaluate_model(model, config, info, log)
    write_json(run.metrics, metrics)
    # Last: until final.keras and metrics.json exist, a rerun resumes from the backup.
    backup.delete()
    return {"history": history.history, "metrics": metrics,
            "steps": int(optimizer.iterations.numpy()), "seconds": time.time() - start}


def _train_multi_worker(config, model, optimizer, strategy, steps, info, start, log):
    """`train` for MultiWorkerMirroredStrategy: custom step; only the chief writes the run folder.

    Every worker restores RUN/backup (a shared folder) and takes part in each epoch's checkpoint;
    the chief commits it, scores a single-process copy on the validation set for best.keras, and
    writes final.keras and metrics.json.
    """
    chief = is_chief(strategy)
    with strategy.scope():
        optimizer.build(model.trainable_variables)  # its slots are part of the checkpoint
    if chief:
        _write_config(config)
    run = RunFolder(config.run_dir)
    backup = RunBackup(run.backup, list(model.variables) + list(optimizer.variables),
                       history_csv=run.history, writer=chief)
    initial_epoch, rows = backup.restore()
    if initial_epoch:
        log(f"Resuming after epoch {initial_epoch} of {config.epochs} from {backup.directory}")
    # A copy outside the strategy (Keras cannot evaluate under MultiWorkerMirroredStrategy),
    # compiled once: every epoch's validation runs the step Keras traced for the first one.
    single = build_model(config, info) if chief else None
    scoring = _validation_model(single, config) if chief else None
    last = {}  # the confusion matrix of the latest validation

    def copy_to_single():
        single.set_weights([np.asarray(w) for w in model.get_weights()])
        return single

    def score():
        copy_to_single()
        last["confusion"] = _validation_confusion(scoring, config)
        return validation_metrics(last["confusion"], info, log)["mean_iou"]

    callbacks = []
    if chief:
        callbacks.append(cb.BestByScore(
            score, lambda: save_model(inference_model(single), run.best), best=_best_so_far(rows)))
    callbacks.append(cb.EpochBackup(backup))
    global_batch = config.batch_size * strategy.num_replicas_in_sync
    losses = train_multi_worker(
        model, optimizer, recipe.output_loss(config.aux_weight),
        lambda context: _train_dataset(config, global_batch, steps, initial_epoch, context),
        epochs=config.epochs, steps_per_epoch=steps, strategy=strategy, callbacks=callbacks,
        initial_epoch=initial_epoch, backup=backup, log=log if chief else (lambda *_: None))
    result = {"history": {"loss": losses}, "steps": int(optimizer.iterations.numpy()),
              "seconds": time.time() - start, "metrics": None}
    if chief:
        save_model(inference_model(copy_to_single()), run.final)
        if losses:
            # The last epoch ran here, and its validation scored exactly these weights.
            result["metrics"] = validation_metrics(last["confusion"], info, log)
        else:  # resumed after the last epoch, whose counts died with the killed process
            result["metrics"] = validation_metrics(_validation_confusion(scoring, config), info, log)
        write_json(run.metrics, result["metrics"])
        backup.delete()
    return result
