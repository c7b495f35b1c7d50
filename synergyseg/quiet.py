"""Import TensorFlow without the start-up lines a user cannot act on.

Loading TensorFlow writes lines like these to stderr, some before its logging has read
TF_CPP_MIN_LOG_LEVEL, so that no level hides them:

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 ... cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
    E0000 ... cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: ... (303)

`quiet_tensorflow()` imports TensorFlow and finds its devices while file descriptor 2 goes to a
filter process that drops exactly the known start-up lines (`start_up_line_patterns()`) and passes
every other line on, in order. The filter is a process of its own so that it outlives this one:
a fatal error that aborts the import still reaches the user. The CUDA lines are kept on a machine
with an NVIDIA device (/dev/nvidia*), where they mean that a GPU goes unused.

This module imports nothing from TensorFlow or synergyseg: the package runs it first.
"""

import contextlib
import glob
import os
import re
import subprocess
import sys

LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
# 2: TensorFlow's C++ INFO and WARNING lines hidden, errors shown.
DEFAULT_LOG_LEVEL = "2"
# Set beside LOG_LEVEL_VARIABLE to the level this module chose, so that a child process (the
# converters' spawned workers) inheriting that level still counts as not set by the user.
_CHOSEN_LEVEL_VARIABLE = "SYNERGYSEG_DEFAULT_TF_CPP_MIN_LOG_LEVEL"

# absl's prefix: severity (never F, fatal), MMDD, time, thread id; then source file:line].
_LOG_PREFIX = r"[IWE]\d{4} \S+ +\d+ "


def _log_line(source, message):
    return _LOG_PREFIX + source + r":\d+\] " + message


# Lines every machine prints, whatever its hardware.
_ALWAYS = (
    re.escape("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"),
    _log_line(r"cpu_feature_guard\.cc", re.escape(
        "This TensorFlow binary is optimized to use available CPU instructions in "
        "performance-critical operations.")),
    r"To enable the following instructions: [\w. ]+, in other operations, "
    r"rebuild TensorFlow with the appropriate compiler flags\.",
    _log_line(r"[\w.]+\.cc", re.escape("oneDNN custom operations are on. ") + r".*"),
    _log_line(r"cuda_(?:dnn|fft|blas)\.cc",
              r"Unable to register cu(?:DNN|FFT|BLAS) factory: Attempting to register factory for "
              r"plugin cu(?:DNN|FFT|BLAS) when one has already been registered"),
    _log_line(r"computation_placer\.cc",
              re.escape("computation placer already registered. Please check linkage and avoid "
                        "linking the same target more than once.")),
    _log_line(r"py_utils\.cc", re.escape("TF-TRT Warning: Could not find TensorRT")),
)
# Lines that say the GPU is missing: dropped only where there is none.
_WITHOUT_GPU = (
    _log_line(r"cudart_stub\.cc",
              re.escape("Could not find cuda drivers on your machine, GPU will not be used.")),
    _log_line(r"cuda_(?:platform|driver|executor)\.cc", r"failed call to cuInit: .*"),
)

# Runs in its own interpreter (-I -S: nothing but the standard library): copies stdin to stdout
# without the lines that fully match argv[1], until every write end of the pipe is closed.
_FILTER_SCRIPT = """
import re, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C stops the import: still pass its lines on
drop = re.compile(sys.argv[1].encode())
for line in sys.stdin.buffer:
    if not drop.fullmatch(line.rstrip(b"\\r\\n")):
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()
"""


# The line TensorFlow's TFLite converter prints (C++, stderr) for every int8 conversion; a user
# cannot act on it (the settings it names are the ones synergyseg.export chose).
CONVERTER_LINES = (
    r"fully_quantize: \d+, inference_type: \d+, input_inference_type: \w+, output_inference_type: \w+",
)


def start_up_line_patterns(has_gpu=None):
    """Regular expressions, each matching one whole known start-up line (without its newline).

    `has_gpu` (default: whether /dev/nvidia<N> exists) keeps the "no CUDA driver" lines.
    """
    if has_gpu is None:
        has_gpu = bool(glob.glob("/dev/nvidia[0-9]*"))
    return _ALWAYS + (() if has_gpu else _WITHOUT_GPU)


@contextlib.contextmanager
def start_up_lines_dropped(patterns=None):
    """Within it, what is written to file descriptor 2 (C++ and Python alike) reaches stderr without
    the lines that fully match one of `patterns` (default `start_up_line_patterns()`).

    Every other line is on stderr, in order, when the block ends, also when it raises.
    """
    pattern = "|".join(f"(?:{p})" for p in (patterns or start_up_line_patterns()))
    sys.stderr.flush()
    try:
        real_stderr = os.dup(2)
    except OSError:  # no file descriptor 2 (a windowless process): nothing to filter
        yield
        return
    try:
        process = subprocess.Popen([sys.executable, "-I", "-S", "-c", _FILTER_SCRIPT, pattern],
                                   stdin=subprocess.PIPE, stdout=real_stderr)
    except OSError:  # no interpreter to run the filter (an embedded Python): filter nothing
        os.close(real_stderr)
        yield
        return
    try:
        os.dup2(process.stdin.fileno(), 2)
        process.stdin.close()  # file descriptor 2 is now the pipe's only write end here
        yield
    finally:
        sys.stderr.flush()
        os.dup2(real_stderr, 2)  # closes the pipe: the filter passes its last lines on and ends
        os.close(real_stderr)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a child still holds the pipe: the filter goes on alone
            pass


def quiet_tensorflow():
    """Import TensorFlow and find its devices without the start-up lines a user cannot act on.

    Sets TF_CPP_MIN_LOG_LEVEL to DEFAULT_LOG_LEVEL unless the user set it; if they did, it only
    imports TensorFlow and their level decides what shows. Does nothing once TensorFlow is
    imported: call it before anything imports TensorFlow (`import synergyseg` calls it first).
    """
    if "tensorflow" in sys.modules:
        return
    level = os.environ.get(LOG_LEVEL_VARIABLE)
    if level is not None and level != os.environ.get(_CHOSEN_LEVEL_VARIABLE):
        import tensorflow  # noqa: F401  the user's level, the user's lines
        return
    os.environ[LOG_LEVEL_VARIABLE] = os.environ[_CHOSEN_LEVEL_VARIABLE] = DEFAULT_LOG_LEVEL
    with start_up_lines_dropped():
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")  # the CUDA driver is tried here, not at import
