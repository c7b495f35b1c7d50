"""Segment image files, folders, globs and videos into an output folder (what the command line does).

Per image `NAME.*`, in the output folder:
    NAME_labels.png        class ids, one channel (train ids; official ids with cityscapes_ids)
    NAME_color.png         the class map in the model's colours
    NAME_overlay.png       the colours blended over the image (opacity)
    NAME_uncertainty.png   the low scale's uncertainty, 0 = certain .. 255 (two-scale models and
                           exports that serve it)
Per video `NAME.*`: NAME_overlay.mp4, same frame count, size and frame rate.
A file inside an input folder keeps its path below that folder (`photos/a/x.jpg` -> `OUT/a/x_*`).
"""

import dataclasses
import os
import time

import keras
from PIL import Image

from synergyseg.data.info import CITYSCAPES
from synergyseg.predict import io
from synergyseg.predict.render import DEFAULT_OPACITY, overlay, uncertainty_image

IMAGE_OUTPUTS = {"labels": "_labels.png", "color": "_color.png", "overlay": "_overlay.png",
                 "uncertainty": "_uncertainty.png"}
VIDEO_OUTPUTS = {"overlay": "_overlay.mp4"}
# Images per model call; frames of a video always batch, images only while they share a size.
DEFAULT_BATCH_SIZE = 4


@dataclasses.dataclass
class PredictOptions:
    """How `predict_files` segments and what it writes; the command line's flags map onto these."""

    batch_size: int = DEFAULT_BATCH_SIZE
    opacity: float = DEFAULT_OPACITY
    cityscapes_ids: bool = False  # class-id PNGs in the official Cityscapes label ids
    overwrite: bool = False  # replace existing outputs (else an input whose outputs exist is skipped)
    resize_factor: float = None
    flip: bool = False
    progress: bool = True


@dataclasses.dataclass
class _Job:
    kind: str
    path: str
    outputs: dict  # {output key: path} of the outputs to write


def output_paths(out_dir, kind, name, two_scale=True):
    """`{output key: path}` of one input's outputs (see the module docstring)."""
    suffixes = dict(IMAGE_OUTPUTS) if kind == "image" else dict(VIDEO_OUTPUTS)
    if not two_scale:
        suffixes.pop("uncertainty", None)
    return {key: os.path.join(out_dir, name + suffix) for key, suffix in suffixes.items()}


def _check(segmenter, out_dir, options):
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise NotADirectoryError(f"Output folder {out_dir!r} exists and is not a folder")
    if options.batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {options.batch_size}")
    if not 0 <= options.opacity <= 1:
        raise ValueError(f"opacity must be in [0, 1], got {options.opacity}")
    if options.cityscapes_ids and segmenter.num_classes != CITYSCAPES.num_classes:
        raise ValueError(f"cityscapes_ids needs a Cityscapes model ({CITYSCAPES.num_classes} classes); "
                         f"{segmenter.source!r} predicts {segmenter.num_classes}")
    segmenter.check_options(resize_factor=options.resize_factor, flip=options.flip)


def _plan(segmenter, inputs, out_dir, options, log):
    found = io.find_inputs(inputs, exclude=out_dir)
    if not found:
        raise ValueError(f"No images or videos in {', '.join(map(repr, map(os.fspath, inputs)))} "
                         f"(images: {', '.join(io.IMAGE_EXTENSIONS)}; videos: "
                         f"{', '.join(io.VIDEO_EXTENSIONS)})")
    jobs, owners, skipped = [], {}, 0
    for kind, path, name in found:
        outputs = output_paths(out_dir, kind, name, segmenter.two_scale)
        for target in outputs.values():
            if target in owners:
                raise ValueError(f"Inputs {owners[target]!r} and {path!r} would both write {target!r}; "
                                 "rename one or segment them into different folders")
            owners[target] = path
        if not options.overwrite:
            outputs = {k: p for k, p in outputs.items() if not os.path.exists(p)}
            if not outputs:
                skipped += 1
                continue
        jobs.append(_Job(kind, path, outputs))
    if skipped:
        log(f"Skipping {skipped} input(s) whose outputs exist in {out_dir} (--overwrite to redo them)")
    return jobs, skipped


def _check_readable(job):
    """Fails on a file that is not an image or video before any work starts, naming it.

    Returns the number of pictures it holds (1, or a video's frame count as its container says).
    """
    if job.kind == "video":
        with io.VideoReader(job.path) as video:
            return video.frame_count or 1
    try:
        with Image.open(job.path) as image:
            image.verify()  # the header and, for PNG, every chunk's checksum
    except Exception as e:  # Pillow raises many types for a foreign or damaged file
        raise ValueError(f"{job.path!r} is not a readable image: {e}") from e
    return 1


def predict_files(segmenter, inputs, out_dir, options=None, log=print):
    """Segments every image and video of `inputs` into `out_dir` (see the module docstring).

    Every input is checked before the first prediction, so a file that is not an image or video
    stops the run with an error naming it and nothing written. Each output file is written
    whole. Existing outputs are kept unless `options.overwrite`.

    Args:
        segmenter: a `synergyseg.Segmenter`.
        inputs: image or video files, folders (walked; other files skipped) and globs.
        out_dir: the output folder (created).
        options: `PredictOptions`.
        log: progress lines (None for silence).

    Returns:
        `{"images": n, "videos": [per-video dict with frames, model_fps, total_fps, path],
        "skipped": n, "written": [paths]}`.
    """
    options = options or PredictOptions()
    log = log or (lambda *_: None)
    out_dir = os.fspath(out_dir)
    _check(segmenter, out_dir, options)
    jobs, skipped = _plan(segmenter, inputs, out_dir, options, log)
    total = 0
    for job in jobs:
        total += _check_readable(job)
    images = [job for job in jobs if job.kind == "image"]
    videos = [job for job in jobs if job.kind == "video"]
    bar = keras.utils.Progbar(total or None, unit_name="picture") if options.progress and jobs else None
    done = [0]

    def advance(count):
        done[0] += count
        if bar is not None:
            bar.update(min(done[0], total) if total else done[0])

    written = _predict_images(segmenter, images, options, advance)
    video_results = []
    for job in videos:
        result = _predict_video(segmenter, job, options, advance)
        video_results.append(result)
        written.append(result["path"])
        log(f"{job.path}: {result['frames']} frames {result['width']}x{result['height']} -> "
            f"{result['path']}; model {result['model_fps']:.1f} FPS "
            f"({result['model_ms_per_frame']:.1f} ms per frame), total {result['total_fps']:.1f} FPS "
            "(reading, segmenting, drawing and encoding)")
    if bar is not None and total and done[0] < total:
        bar.update(total)
    return {"images": len(images), "videos": video_results, "skipped": skipped, "written": written}


def _labels(segmenter, class_map, options):
    if options.cityscapes_ids:
        from synergyseg.evaluation.cityscapes_results import train_ids_to_label_ids

        return train_ids_to_label_ids(class_map)
    return class_map


def _write_image_outputs(segmenter, job, image, result, options):
    pictures = {"labels": lambda: _labels(segmenter, result.class_map, options),
                "color": lambda: segmenter.colorize(result.class_map),
                "overlay": lambda: overlay(image, segmenter.colorize(result.class_map), options.opacity),
                "uncertainty": lambda: uncertainty_image(result.uncertainty)}
    return [io.write_png(path, pictures[key]()) for key, path in job.outputs.items()]


def _predict_images(segmenter, jobs, options, advance):
    written, pending = [], []

    def flush():
        if not pending:
            return
        results = segmenter.predict([image for _, image in pending], resize_factor=options.resize_factor,
                                    flip=options.flip)
        for (job, image), result in zip(pending, results):
            written.extend(_write_image_outputs(segmenter, job, image, result, options))
        advance(len(pending))
        pending.clear()

    for job in jobs:
        image = io.read_image(job.path)
        if pending and (pending[0][1].shape != image.shape or len(pending) >= options.batch_size):
            flush()
        pending.append((job, image))
    flush()
    return written


def _predict_video(segmenter, job, options, advance):
    start = time.perf_counter()
    model_seconds, frames = 0.0, 0
    with io.VideoReader(job.path) as video, \
            io.video_writer(job.outputs["overlay"], video.fps, (video.height, video.width)) as write:
        batch = []

        def flush():
            nonlocal model_seconds, frames
            if not batch:
                return
            tic = time.perf_counter()
            results = segmenter.predict(list(batch), resize_factor=options.resize_factor,
                                        flip=options.flip)
            model_seconds += time.perf_counter() - tic
            for frame, result in zip(batch, results):
                write(overlay(frame, segmenter.colorize(result.class_map), options.opacity))
            frames += len(batch)
            advance(len(batch))
            batch.clear()

        for frame in video:
            batch.append(frame)
            if len(batch) >= options.batch_size:
                flush()
        flush()
        height, width = video.height, video.width
    seconds = time.perf_counter() - start
    return {"path": job.outputs["overlay"], "frames": frames, "height": height, "width": width,
            "model_fps": frames / model_seconds if model_seconds else 0.0,
            "model_ms_per_frame": 1000 * model_seconds / frames if frames else 0.0,
            "total_fps": frames / seconds if seconds else 0.0}
