"""Export a trained model to every deployment format in one call, all or nothing."""

import os
import re
import shutil
import tempfile
import time

import keras

from synergyseg.atomic import remove_dead_staging
from synergyseg.models.synergy import as_synergyseg
from synergyseg.run_folder import (
    check_finite, class_info, load_synergyseg_model, resolve_model_path)
from synergyseg.export.metadata import METADATA_NAME, metadata, write_metadata
from synergyseg.export.onnx import export_onnx
from synergyseg.export.saved_model import export_saved_model
from synergyseg.export.serving import SERVING_OUTPUTS, check_serving_options
from synergyseg.export.tflite import (
    QUANTIZATIONS, calibration_images, check_tflite_size, export_tflite)

FORMATS = ("saved_model", "tflite", "onnx")
# Images read from the calibration shards for int8: TFLite's guidance is about 100.
DEFAULT_CALIBRATION_IMAGES = 100


def artifact_names(formats=FORMATS, quantizations=QUANTIZATIONS):
    """`{artifact: file name in the output folder}` for the requested formats."""
    names = {}
    if "saved_model" in formats:
        names["saved_model"] = "saved_model"
    if "tflite" in formats:
        names.update({f"tflite_{q}": f"model_{q}.tflite" for q in quantizations})
    if "onnx" in formats:
        names["onnx"] = "model.onnx"
    return names


def _check_arguments(formats, tflite_size, quantizations, calibration):
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"formats must be a non-empty subset of {FORMATS}, got {tuple(formats)}")
    if "tflite" not in formats:
        return None
    bad = [q for q in quantizations if q not in QUANTIZATIONS]
    if bad or not quantizations:
        raise ValueError(
            f"quantizations must be a non-empty subset of {QUANTIZATIONS}, got {tuple(quantizations)}")
    if tflite_size is None:
        raise ValueError("tflite_size (height, width) is required for the TFLite export")
    size = check_tflite_size(tflite_size)
    if "int8" in quantizations:
        if calibration is None:
            raise ValueError("int8 TFLite needs calibration: a glob of TFRecord shards "
                             "(e.g. 'data/synthetic/val-*.tfrecord')")
        from synergyseg.data import list_files

        list_files(calibration)  # FileNotFoundError naming the pattern if nothing matches.
    return size


def _dir_size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, f))
               for root, _, files in os.walk(path) for f in files)


def _staging_prefix(out_dir):
    return f".{os.path.basename(os.path.abspath(out_dir))}.export-"


# `_staging_prefix(any output folder)` + `<pid>-<suffix>`, and its `.old` set-aside folder.
_EXPORT_STAGING = re.compile(r"^\..+\.export-(\d+)-")


def remove_stale_staging(out_dir):
    """Deletes the hidden staging folders beside `out_dir` that killed exports left, whatever
    output folder those exports were writing.

    A staging folder's name holds the id of the process that made it; one whose process is gone
    is stale (a live export's folder is left alone). Returns the paths removed, sorted.
    """
    return remove_dead_staging(os.path.dirname(os.path.abspath(out_dir)), _EXPORT_STAGING)


def _move_into_place(staging, out_dir):
    """Moves the export in `staging` into `out_dir`, which then holds no earlier export's artifact.

    A new folder is `staging` renamed. In an existing one, every artifact an export can write
    (any format, any quantization, metadata.json) is first renamed aside into a hidden folder
    that `remove_stale_staging` deletes should a kill come now, then the new ones are moved in,
    metadata.json last; other files stay. So the folder never mixes two exports' files.
    """
    if not os.path.isdir(out_dir):
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp made it private; an output folder is not
        os.replace(staging, out_dir)
        return
    aside = staging + ".old"
    os.mkdir(aside)
    for name in [*artifact_names().values(), METADATA_NAME]:
        if os.path.lexists(os.path.join(out_dir, name)):
            os.replace(os.path.join(out_dir, name), os.path.join(aside, name))
    for name in sorted(os.listdir(staging), key=lambda n: n == METADATA_NAME):
        os.replace(os.path.join(staging, name), os.path.join(out_dir, name))
    shutil.rmtree(aside, ignore_errors=True)


def export_model(source, out_dir, *, formats=FORMATS, tflite_size=None, quantizations=QUANTIZATIONS,
                 calibration=None, num_calibration_images=DEFAULT_CALIBRATION_IMAGES,
                 outputs=SERVING_OUTPUTS, class_map_stride=1, log=print):
    """Exports a trained SynergySeg model as SavedModel, TFLite and ONNX into `out_dir`.

    Everything is checked before any work starts, and files are built in a hidden folder beside
    `out_dir` and moved in only once all of them are done: a failure leaves `out_dir`
    unchanged; a success leaves this export's artifacts in it and no earlier export's.

    Args:
        source: a `.keras` file, a run folder written by train.py, or a loaded SynergySeg model.
        out_dir: output folder (created; an earlier export's artifacts in it, of any format,
            are removed, other files kept).
        formats: any of "saved_model", "tflite", "onnx".
        tflite_size: `(height, width)` of the TFLite input (required for "tflite").
        quantizations: TFLite variants, any of "float32", "float16", "int8".
        calibration: glob of TFRecord shards whose images calibrate int8 (required for "int8").
        num_calibration_images: images read from `calibration`.
        outputs: which of `SERVING_OUTPUTS` every artifact serves (all by default).
        class_map_stride: 1 (default), or the stride at which every artifact takes its class map
            (`build_serving_model`; models fused at the decoder only). Both are recorded in
            metadata.json.
        log: progress output, `None` for silence.

    Returns:
        `{artifact: path}` for "saved_model", "tflite_float32", "tflite_float16", "tflite_int8",
        "onnx" (those requested) and "metadata" (metadata.json: class names and colours,
        outputs and class map stride).

    Example:
        >>> export_model("runs/cityscapes", "export", tflite_size=(512, 1024),
        ...              calibration="data/cityscapes/val-*.tfrecord")
    """
    log = log or (lambda *_: None)
    formats, quantizations = tuple(formats), tuple(quantizations)
    if not isinstance(source, keras.Model):
        resolve_model_path(source)  # a missing file is named before any other complaint
    size = _check_arguments(formats, tflite_size, quantizations, calibration)
    if isinstance(source, keras.Model):
        check_finite(source, f"model {source.name!r}")  # load_synergyseg_model checks a file
        model = as_synergyseg(source)
    else:
        model = load_synergyseg_model(source)
    outputs, class_map_stride = check_serving_options(model, outputs, class_map_stride)
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise NotADirectoryError(f"Output folder {out_dir!r} exists and is not a folder")

    names = artifact_names(formats, quantizations)
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    remove_stale_staging(out_dir)
    staging = tempfile.mkdtemp(prefix=_staging_prefix(out_dir) + f"{os.getpid()}-", dir=parent)
    try:
        calibration_set = None
        for step, (artifact, name) in enumerate(names.items(), start=1):
            start = time.perf_counter()
            path = os.path.join(staging, name)
            log(f"[{step}/{len(names)}] {artifact} -> {os.path.join(out_dir, name)}")
            if artifact == "saved_model":
                export_saved_model(model, path, outputs, class_map_stride)
            elif artifact == "onnx":
                export_onnx(model, path, outputs=outputs, class_map_stride=class_map_stride)
            else:
                quantization = artifact.removeprefix("tflite_")
                if quantization == "int8" and calibration_set is None:
                    calibration_set = list(calibration_images(calibration, size,
                                                              num_calibration_images))
                    log(f"      calibrating on {len(calibration_set)} images from {calibration}")
                export_tflite(model, path, size, quantization,
                              calibration_set if quantization == "int8" else None,
                              outputs, class_map_stride)
            log(f"      {_dir_size(path) / 2**20:.1f} MiB in {time.perf_counter() - start:.0f} s")
        # Class names and colours beside the artifacts, which hold only the serving graph.
        source_path = None if isinstance(source, keras.Model) else resolve_model_path(source)
        write_metadata(os.path.join(staging, METADATA_NAME), metadata(
            model, *class_info(model, source_path), source=source_path, tflite_size=size,
            outputs=outputs, class_map_stride=class_map_stride))
        names["metadata"] = METADATA_NAME
        _move_into_place(staging, out_dir)
        return {artifact: os.path.join(out_dir, name) for artifact, name in names.items()}
    finally:
        shutil.rmtree(staging, ignore_errors=True)
