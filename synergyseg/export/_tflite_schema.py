"""The TFLite flatbuffer schema bindings, from LiteRT when installed, else from TensorFlow."""

try:
    from ai_edge_litert import schema_py_generated as schema
except ImportError:
    from tensorflow.lite.python import schema_py_generated as schema

__all__ = ["schema"]
