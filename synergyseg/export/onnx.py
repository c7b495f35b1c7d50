"""ONNX export through Keras's own `model.export(format="onnx")`, with dynamic batch, height and width."""

import contextlib
import os

import keras

from synergyseg.atomic import atomic_output
from synergyseg.export.serving import SERVING_OUTPUTS, build_serving_model
from synergyseg.models.names import INPUT

# tf2onnx deep-copies the whole graph before each of its optimizers, on every pass, so that one
# that fails can be skipped; with this variable set it runs them on the graph itself (tf2onnx
# reads only whether the variable is set: any value turns the copies off).
_TF2ONNX_CATCH_ERRORS = "TF2ONNX_CATCH_ERRORS"


@contextlib.contextmanager
def _optimizers_without_copies():
    """tf2onnx's optimizers, in their order, on the graph itself (no copy before each one)."""
    if _TF2ONNX_CATCH_ERRORS in os.environ:  # the user's own choice wins
        yield
        return
    os.environ[_TF2ONNX_CATCH_ERRORS] = "FALSE"
    try:
        yield
    finally:
        os.environ.pop(_TF2ONNX_CATCH_ERRORS, None)


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
        def export():
            serving.export(tmp, format="onnx", input_signature=signature, verbose=False,
                           opset_version=opset_version)

        try:
            # The same optimizers on the same graph, without tf2onnx's graph copy before each
            # one, which took most of the conversion's time.
            with _optimizers_without_copies():
                export()
        except Exception:  # an optimizer failed on the graph itself: tf2onnx's default skips it
            export()
    return path
