"""ONNX export through Keras's own `model.export(format="onnx")`, with dynamic batch, height and width."""

import keras

from synergyseg.atomic import atomic_output
from synergyseg.export.serving import SERVING_OUTPUTS, build_serving_model
from synergyseg.models.names import INPUT


def export_onnx(model, path, opset_version=None, outputs=SERVING_OUTPUTS, class_map_stride=1):
    """Writes `model`'s serving graph as ONNX: uint8 "images" `(batch, h, w, 3)` of any size.

    Outputs are those of `build_serving_model(model, outputs, class_map_stride)` ("class_map"
    int32, "probabilities", "uncertainty" float32, those `outputs` names; a strided class map
    converts to ONNX Resize, ArgMax and DepthToSpace). Needs `tf2onnx` (Keras converts through
    it on TensorFlow) and, to run the file, `onnxruntime`.

    Example:
        >>> export_onnx(model, "export/model.onnx")
        >>> session = onnxruntime.InferenceSession("export/model.onnx")
        >>> class_map, probabilities, uncertainty = session.run(None, {"images": images})
    """
    serving = build_serving_model(model, outputs, class_map_stride)
    signature = [keras.InputSpec(shape=(None, None, None, 3), dtype="uint8", name=INPUT)]
    with atomic_output(path) as tmp:
        serving.export(tmp, format="onnx", input_signature=signature, verbose=False,
                       opset_version=opset_version)
    return path
