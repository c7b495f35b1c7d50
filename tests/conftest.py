import os

# Quiet TF's C++ logging and keep tests on the CPU's deterministic kernels.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# Under pytest-xdist (the README's test command runs `-n 2`) each worker process gets its share of
# the cores for TensorFlow's compute threads, so that the workers do not oversubscribe them (spinning
# threads on shared cores waste the CPU); child processes inherit the share. A value the user set wins.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(max(1, (os.cpu_count() or 1) // _workers)))
# TFLite files must run in ai-edge-litert: make_interpreter's tf.lite fallback raises instead.
os.environ["SYNERGYSEG_REQUIRE_LITERT"] = "1"
