"""Export trained SynergySeg models: SavedModel (serving signature), TFLite (float32/float16/int8), ONNX.

    from synergyseg.export import export_model
    export_model("runs/synthetic", "export", tflite_size=(256, 512),
                 calibration="data/synthetic/val-*.tfrecord")

or from the shell: `python -m synergyseg.export runs/synthetic --out export --tflite-size 256x512
--calibration "data/synthetic/val-*.tfrecord"`.
"""

from synergyseg.export.artifacts import FORMATS, artifact_names, export_model
from synergyseg.run_folder import load_synergyseg_model, resolve_model_path
from synergyseg.export.onnx import export_onnx
from synergyseg.export.saved_model import export_saved_model
from synergyseg.export.serving import (
    SERVING_OUTPUTS, ClassMap, ImagesToFloat, StridedClassMap, build_serving_model,
    check_serving_options)
from synergyseg.export.tflite import (
    QUANTIZATIONS, calibration_images, check_builtin_ops, check_int8_scales, check_tflite_size,
    convert_tflite, export_tflite, make_interpreter, run_tflite, tflite_ops, undelegated_ops)

__all__ = [
    "FORMATS", "QUANTIZATIONS", "SERVING_OUTPUTS", "ClassMap", "ImagesToFloat", "StridedClassMap",
    "artifact_names", "build_serving_model", "calibration_images", "check_builtin_ops",
    "check_int8_scales", "check_serving_options", "check_tflite_size", "convert_tflite",
    "export_model", "export_onnx", "export_saved_model", "export_tflite", "load_synergyseg_model",
    "make_interpreter", "resolve_model_path", "run_tflite", "tflite_ops", "undelegated_ops",
]
