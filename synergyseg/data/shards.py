"""Write examples into N TFRecord shards in parallel, atomically and resumably, and summarise them.

A shard is written under a temporary name and renamed only when complete, so an interrupted run
never leaves a half shard under a final name; running again skips the shards that exist, after
checking that the conversion parameters recorded in the split's manifest
(`.stats/<split>.manifest.json`) are the ones asked for now. Worker processes die with the
process that started them (Linux), so a killed converter leaves none behind.
"""

import concurrent.futures
import contextlib
import ctypes
import dataclasses
import glob
import json
import multiprocessing
import os
import re
import signal
import sys

import keras
import numpy as np

from synergyseg.atomic import write_text
from synergyseg.data.info import IGNORE_LABEL
from synergyseg.quiet import quiet_tensorflow

# Per-shard statistics live beside the shards so a resumed run can still print the full summary.
_STATS_DIR = ".stats"


def shard_name(split, index, num_shards):
    """File name of shard `index` of `num_shards` for `split`: `train-00003-of-00016.tfrecord`."""
    return f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord"


def shard_pattern(out_dir, split):
    """Glob that matches every finished shard of `split` in `out_dir`."""
    return os.path.join(out_dir, f"{split}-?????-of-?????.tfrecord")


def label_histogram(label):
    """Pixels per label value (256 bins) of a uint8 label map."""
    return np.bincount(np.asarray(label, np.uint8).ravel(), minlength=256).astype(np.int64)


@dataclasses.dataclass
class ConversionSummary:
    """What a conversion wrote: image count and pixels per label value (index 255 = ignored)."""

    split: str
    images: int
    pixel_counts: np.ndarray  # (256,) int64
    # Pixels (and images holding them) whose source id the dataset does not define; stored as 255.
    unknown_pixels: int = 0
    unknown_images: int = 0

    @property
    def ignored_fraction(self):
        total = int(self.pixel_counts.sum())
        return float(self.pixel_counts[IGNORE_LABEL]) / total if total else 0.0

    def format(self, class_names):
        """A human-readable report: images, pixels (and share) per class, ignored fraction."""
        total = max(int(self.pixel_counts.sum()), 1)
        lines = [f"{self.split}: {self.images} images, {int(self.pixel_counts.sum())} pixels"]
        for i, name in enumerate(class_names):
            n = int(self.pixel_counts[i])
            lines.append(f"  {i:3d} {name:<24s} {n:>14d}  {100.0 * n / total:6.2f}%")
        unknown = int(self.pixel_counts[len(class_names):IGNORE_LABEL].sum())
        if unknown:
            lines.append(f"  WARNING: {unknown} pixels have ids >= {len(class_names)} other than 255")
        lines.append(f"  ignored (255): {100.0 * self.ignored_fraction:.2f}%")
        if self.unknown_pixels:
            lines.append(
                f"  WARNING: {self.unknown_pixels} pixels in {self.unknown_images} images have "
                "label ids the dataset does not define; they were stored as 255 (ignored). "
                "Pass --strict to refuse such files.")
        return "\n".join(lines)


def count_unknown(ids, known, path, strict):
    """Pixels of `ids` outside `known` (a bool table per id); with `strict` an error naming `path`.

    255 counts as known: it is the ignore value already.
    """
    ids = np.asarray(ids)
    unknown = ~np.asarray(known, bool)[ids]
    unknown &= ids != IGNORE_LABEL
    count = int(unknown.sum())
    if count and strict:
        values = np.unique(ids[unknown])
        raise ValueError(f"{path}: {count} pixels have label ids the dataset does not define "
                         f"({', '.join(str(v) for v in values[:10])}); drop --strict to store "
                         "them as 255 (ignored)")
    return count


def _stats_path(out_dir, name):
    return os.path.join(out_dir, _STATS_DIR, name + ".json")


def _write_shard(out_dir, split, index, num_shards, items, encode_fn):
    """Worker: encode `items` into one shard; returns (index, images, pixel counts)."""
    import tensorflow as tf  # imported here so spawned workers that never write shards stay light

    name = shard_name(split, index, num_shards)
    path = os.path.join(out_dir, name)
    tmp = f"{path}.tmp-{os.getpid()}"
    counts = np.zeros(256, np.int64)
    unknown_pixels = unknown_images = 0
    try:
        with tf.io.TFRecordWriter(tmp) as writer:
            for item in items:
                # encode_fn returns (record, histogram) or (record, histogram, unknown pixels).
                record, histogram, *unknown = encode_fn(item)
                writer.write(record)
                counts += histogram
                if unknown and unknown[0]:
                    unknown_pixels += int(unknown[0])
                    unknown_images += 1
        # Stats first, shard last: a shard under its final name always has its stats.
        write_text(_stats_path(out_dir, name), json.dumps({
            "images": len(items), "pixel_counts": counts.tolist(),
            "unknown_pixels": unknown_pixels, "unknown_images": unknown_images}))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return index, len(items), counts, unknown_pixels, unknown_images


def _finished_shard(out_dir, name):
    """(index, images, counts, unknown pixels, unknown images) of a finished shard, or None."""
    stats = _stats_path(out_dir, name)
    if not (os.path.exists(os.path.join(out_dir, name)) and os.path.exists(stats)):
        return None
    with open(stats) as f:
        data = json.load(f)
    return (None, data["images"], np.asarray(data["pixel_counts"], np.int64),
            data.get("unknown_pixels", 0), data.get("unknown_images", 0))


def _check_manifest(out_dir, split, parameters):
    """Records `parameters` for `split`, or refuses a resume whose parameters differ."""
    if parameters is None:
        return
    path = os.path.join(out_dir, _STATS_DIR, f"{split}.manifest.json")
    parameters = json.loads(json.dumps(parameters))
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        if previous != parameters:
            changed = ", ".join(f"{k}: {previous.get(k)!r} -> {parameters.get(k)!r}"
                                for k in sorted(set(previous) | set(parameters))
                                if previous.get(k) != parameters.get(k))
            raise FileExistsError(
                f"{out_dir} holds {split} shards converted with other parameters ({changed}); "
                "pass another output folder, or delete that one to convert again")
        return
    if glob.glob(os.path.join(out_dir, f"{split}-*.tfrecord")):
        raise FileExistsError(
            f"{out_dir} holds {split} shards without a record of their parameters (written by "
            "an earlier version); pass another output folder, or delete that one to convert again")
    write_text(path, json.dumps(parameters, indent=2, sort_keys=True) + "\n")


def _add(summary, shard):
    _, images, counts, unknown_pixels, unknown_images = shard
    summary.images += images
    summary.pixel_counts += counts
    summary.unknown_pixels += unknown_pixels
    summary.unknown_images += unknown_images


def _check_no_other_sharding(out_dir, split, num_shards):
    pattern = re.compile(rf"{re.escape(split)}-\d{{5}}-of-(\d{{5}})\.tfrecord$")
    others = sorted(f for f in os.listdir(out_dir)
                    if (m := pattern.match(f)) and int(m.group(1)) != num_shards)
    if others:
        raise FileExistsError(
            f"{out_dir} already holds {split} shards of a different count (e.g. {others[0]}); "
            f"delete them or pass the same number of shards as before ({num_shards} requested)")


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with_parent(parent_pid):
    """Worker initializer: the kernel SIGKILLs this worker when its parent dies (Linux).

    Without it a `kill -9` of the converter leaves its workers running (PPID 1) forever. It also
    imports TensorFlow without its start-up lines (the unpickling of this function imported
    synergyseg, which did so already; the call keeps the worker quiet should that change).
    """
    quiet_tensorflow()
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def worker_pool(workers=None):
    """A process pool to share between `write_shards` calls (None when `workers` is 1).

    spawn, not fork: forking a process that has already run TensorFlow can deadlock. The
    workers die with this process.
    """
    workers = workers or os.cpu_count() or 1
    if workers == 1:
        return contextlib.nullcontext(None)
    return concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=_die_with_parent,
        initargs=(os.getpid(),))


def write_splits(out_dir, items_by_split, encode_fn, *, num_shards, class_names, workers=None,
                 parameters=None, log=print):
    """`write_shards` for each split over one shared process pool, logging each split's summary.

    `items_by_split` maps a shard name prefix ("train", "val") to its items; `num_shards` is an int
    or a {split: int}, capped at the split's item count. Empty splits are skipped. `parameters`
    (JSON values: what the shards' content depends on) go into each split's manifest with the
    split's shard and item counts; a resume with other parameters is refused. Returns the
    summaries by split.
    """
    summaries = {}
    with worker_pool(workers) as pool:
        for split, items in items_by_split.items():
            if not items:
                continue
            count = num_shards[split] if isinstance(num_shards, dict) else num_shards
            count = min(count, len(items))
            split_parameters = None if parameters is None else dict(
                parameters, num_shards=count, items=len(items))
            summaries[split] = write_shards(out_dir, split, items, encode_fn, num_shards=count,
                                            workers=workers, pool=pool,
                                            parameters=split_parameters, log=log)
            if log:
                log(summaries[split].format(class_names))
    return summaries


def write_shards(out_dir, split, items, encode_fn, *, num_shards, workers=None, pool=None,
                 parameters=None, log=print):
    """Encode `items` with `encode_fn` into `num_shards` TFRecord files in `out_dir`.

    Args:
        out_dir: output directory (created if missing).
        split: name prefix of the shards, e.g. "train".
        items: picklable descriptions of the examples (e.g. file pairs, or seeds).
        encode_fn: picklable top-level function `item -> (serialized example, label histogram)`.
        num_shards: number of shards; shard i holds items[i::num_shards].
        workers: processes to use (default: CPU count); 1 encodes in this process.
        pool: an executor from `worker_pool` to reuse (then `workers` is ignored); starting
            processes that import TensorFlow takes seconds, so converters share one per run.
        parameters: JSON values the content depends on, kept in the split's manifest; a resume
            with other parameters raises FileExistsError (None: not checked).
        log: where messages go (`print` by default; `None` for silence, and no progress bar).

    Returns:
        A `ConversionSummary`. Shards that already exist (from an interrupted run) are skipped.
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    quiet = log is None
    log = log or (lambda *_: None)
    os.makedirs(os.path.join(out_dir, _STATS_DIR), exist_ok=True)
    _check_no_other_sharding(out_dir, split, num_shards)
    _check_manifest(out_dir, split, parameters)
    # Temporary files left by a killed run are not shards; remove them before starting again.
    for stale in glob.glob(os.path.join(out_dir, f"{split}-*.tfrecord.tmp-*")):
        os.remove(stale)

    summary = ConversionSummary(split, 0, np.zeros(256, np.int64))
    todo = []
    for index in range(num_shards):
        done = _finished_shard(out_dir, shard_name(split, index, num_shards))
        if done is None:
            todo.append(index)
        else:
            _add(summary, done)
    if len(todo) < num_shards:
        log(f"[{split}] resuming: {num_shards - len(todo)} of {num_shards} shards already written")

    # One progress bar per split, counted in images (a line per shard would flood the log).
    bar = None if quiet else keras.utils.Progbar(len(items), unit_name="image")
    if bar is not None:
        print(f"[{split}] {len(items)} images in {num_shards} shards")
        bar.update(summary.images)

    def record(result, finished):
        _add(summary, result)
        if bar is not None:
            bar.update(summary.images, finalize=finished == len(todo))

    jobs = [(out_dir, split, i, num_shards, items[i::num_shards], encode_fn) for i in todo]
    if pool is None and (workers == 1 or len(jobs) <= 1):
        for finished, job in enumerate(jobs, 1):
            record(_write_shard(*job), finished)
        return summary
    with contextlib.ExitStack() as stack:
        if pool is None:
            pool = stack.enter_context(worker_pool(min(workers or os.cpu_count() or 1, len(jobs))))
        futures = [pool.submit(_write_shard, *job) for job in jobs]
        for finished, future in enumerate(concurrent.futures.as_completed(futures), 1):
            record(future.result(), finished)
    return summary
