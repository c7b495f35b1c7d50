import os

# Quiet TF's C++ logging and keep tests on the CPU's deterministic kernels.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
