import os

# Quiet TF's C++ logging and keep tests on the CPU's deterministic kernels.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# TFLite files must run in ai-edge-litert: make_interpreter's tf.lite fallback raises instead.
os.environ["SYNERGYSEG_REQUIRE_LITERT"] = "1"
