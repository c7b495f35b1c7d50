"""Issue 20: every command starts without TensorFlow's start-up lines, and every other line, from
C++ or Python, a fatal one included, still reaches the user (synergyseg/quiet.py)."""

import glob
import os
import subprocess
import sys

import numpy as np
from PIL import Image

import synergyseg
from tests.reference import tiny_kwargs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIET = os.path.join(ROOT, "synergyseg", "quiet.py")

# Text of the lines TensorFlow 2.21 printed here (no GPU) at start-up, written out independently
# of quiet.py's patterns. The CUDA ones are kept on purpose where an NVIDIA device exists.
START_UP_TEXTS = ["absl::InitializeLog", "cpu_feature_guard", "rebuild TensorFlow with the appropriate",
                  "oneDNN custom operations", "Unable to register cu", "TF-TRT Warning"]
if not glob.glob("/dev/nvidia[0-9]*"):
    START_UP_TEXTS += ["cudart_stub", "Could not find cuda drivers", "cuInit"]


def _user_env(**extra):
    """This environment as a user's shell would have it (no TF_CPP_MIN_LOG_LEVEL), synergyseg importable."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "SYNERGYSEG_DEFAULT_TF_CPP_MIN_LOG_LEVEL")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def _run(args, cwd, env=None):
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd,
                            env=env or _user_env(), timeout=300)
    return result, result.stdout + result.stderr


def _assert_quiet(result, output):
    assert result.returncode == 0, output[-3000:]
    assert [t for t in START_UP_TEXTS if t in output] == [], output[-3000:]


def test_train_evaluate_and_converter_help_are_quiet(tmp_path):
    for script in ("train.py", "evaluate.py", os.path.join("datasets", "cityscapes.py")):
        result, output = _run([os.path.join(ROOT, script), "--help"], tmp_path)
        _assert_quiet(result, output)
        assert result.stdout.startswith("usage:"), output[-3000:]


def test_predict_on_a_saved_model_is_quiet(tmp_path):
    synergyseg.build_synergyseg(3, **tiny_kwargs()).save(tmp_path / "tiny.keras")
    picture = np.random.default_rng(0).integers(0, 256, (32, 64, 3), np.uint8)
    Image.fromarray(picture).save(tmp_path / "street.png")
    result, output = _run(["-m", "synergyseg.predict", "tiny.keras", "street.png", "--out", "out"],
                          tmp_path)
    _assert_quiet(result, output)
    labels = np.asarray(Image.open(tmp_path / "out" / "street_labels.png"))
    assert labels.shape == (32, 64) and labels.max() < 3


def test_the_converter_and_its_spawned_workers_are_quiet(tmp_path):
    result, output = _run([os.path.join(ROOT, "datasets", "synthetic.py"), "--out", "data",
                           "--num-train", "2", "--num-val", "1", "--height", "32", "--width", "64",
                           "--num-shards", "2", "--workers", "2"], tmp_path)
    _assert_quiet(result, output)
    assert {"train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord",
            "val-00000-of-00001.tfrecord"} <= set(os.listdir(tmp_path / "data")), output[-3000:]


def test_a_level_the_user_set_is_kept_and_nothing_filtered(tmp_path):
    script = ("import os, synergyseg; print(os.environ['TF_CPP_MIN_LOG_LEVEL'], "
              "'SYNERGYSEG_DEFAULT_TF_CPP_MIN_LOG_LEVEL' in os.environ)")
    result, output = _run(["-c", script], tmp_path, _user_env(TF_CPP_MIN_LOG_LEVEL="0"))
    assert result.returncode == 0, output[-3000:]
    assert result.stdout.split() == ["0", "False"]
    # TensorFlow 2.21 writes this one before its logging reads any level: the user's choice shows it.
    assert "absl::InitializeLog" in result.stderr


# Loads quiet.py by path, without the synergyseg package (so without TensorFlow), and writes to
# file descriptor 2 inside start_up_lines_dropped: start-up lines, other C++-style lines, Python.
FILTER_SCRIPT = r"""
import importlib.util, os, sys
spec = importlib.util.spec_from_file_location("quiet", sys.argv[1])
quiet = importlib.util.module_from_spec(spec)
spec.loader.exec_module(quiet)
mode = sys.argv[2]
with quiet.start_up_lines_dropped(quiet.start_up_line_patterns(has_gpu=mode == "gpu")):
    os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
    os.write(2, b"I0000 00:00:1796048478.837482   27526 cudart_stub.cc:31] Could not find cuda drivers "
                b"on your machine, GPU will not be used.\n")
    os.write(2, b"E0000 00:00:1796048488.317894   27526 some_kernel.cc:12] a real problem\n")
    os.write(2, b"I0000 00:00:1796048478.939038   27526 cpu_feature_guard.cc:227] This TensorFlow binary "
                b"is optimized to use available CPU instructions in performance-critical operations.\n"
                b"To enable the following instructions: AVX2 FMA, in other operations, rebuild "
                b"TensorFlow with the appropriate compiler flags.\n")
    os.write(2, b"E0000 00:00:1796048488.317894   27526 cuda_platform.cc:52] failed call to cuInit: "
                b"INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n")
    print("a Python warning", file=sys.stderr)
    if mode == "abort":
        os.write(2, b"F0000 00:00:1796048488.317894   27526 cpu_feature_guard.cc:1] fatal: no AVX\n")
        os.abort()
    if mode == "raise":
        raise ImportError("tensorflow is broken")
print("after", file=sys.stderr)
"""
CUDART = ("I0000 00:00:1796048478.837482   27526 cudart_stub.cc:31] Could not find cuda drivers on "
           "your machine, GPU will not be used.\n")
CUINIT = ("E0000 00:00:1796048488.317894   27526 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
          "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n")
REAL = "E0000 00:00:1796048488.317894   27526 some_kernel.cc:12] a real problem\n"


def _filtered(mode, tmp_path):
    return subprocess.run([sys.executable, "-c", FILTER_SCRIPT, QUIET, mode], capture_output=True,
                          text=True, cwd=tmp_path, timeout=60)


def test_only_start_up_lines_are_dropped_in_order(tmp_path):
    result = _filtered("cpu", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == REAL + "a Python warning\nafter\n"
    # With an NVIDIA device the "no CUDA driver" lines mean an unused GPU: they stay.
    result = _filtered("gpu", tmp_path)
    assert result.stderr == CUDART + REAL + CUINIT + "a Python warning\nafter\n"


def test_an_error_in_the_block_and_a_fatal_abort_still_reach_the_user(tmp_path):
    result = _filtered("raise", tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(REAL + "a Python warning\nTraceback"), result.stderr
    assert result.stderr.endswith("ImportError: tensorflow is broken\n"), result.stderr
    # The process dies inside the block; the filter, a process of its own, still passes the line on.
    result = _filtered("abort", tmp_path)
    assert result.returncode < 0
    assert result.stderr == (REAL + "a Python warning\n"
                             "F0000 00:00:1796048488.317894   27526 cpu_feature_guard.cc:1] fatal: no AVX\n")


def test_one_function_per_model_timed_warns_of_no_retracing(caplog):
    # evaluate.py times the two-scale, single-scale and each gated model with one function each,
    # all from the same code: TensorFlow, counting retracing per code object, warned after five.
    import logging

    import tensorflow as tf

    from synergyseg.evaluation.speed import traced

    def six_functions(wrap):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="tensorflow"):
            for scale in range(6):
                wrap(lambda x, s=scale: x * s)(tf.constant(1.0))
        return [r.getMessage() for r in caplog.records if "retracing" in r.getMessage()]

    assert six_functions(tf.function)  # the warning this guards against, with a plain tf.function
    assert six_functions(traced) == []
    assert float(traced(lambda x: x + 1, jit_compile=False)(tf.constant(1.0))) == 2.0


def test_int8_export_does_not_print_the_converters_settings_line(tmp_path, capfd):
    # TensorFlow's converter prints "fully_quantize: 0, inference_type: 6, ..." on stderr (C++) for
    # every int8 conversion; synergyseg.export drops that line and nothing else.
    import tensorflow as tf

    from synergyseg.export.tflite import convert_tflite

    def plain_int8(model):  # the converter without our filter: the reference that prints it
        module = tf.Module()
        module.variables_ = [v.value for v in model.variables]  # as tests/test_gated.py's TFLite test
        module.serve = tf.function(lambda x: model(x, training=False),
                                   input_signature=[tf.TensorSpec((1, 32, 48, 3), tf.float32)])
        tf.saved_model.save(module, str(tmp_path / "plain"), signatures={"serving_default": module.serve})
        converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "plain"))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            [np.random.default_rng(0).uniform(0, 255, (1, 32, 48, 3)).astype("float32")] for _ in range(2))
        converter.convert()

    model = synergyseg.build_synergyseg(3, **tiny_kwargs())
    capfd.readouterr()
    plain_int8(model)
    assert "fully_quantize:" in capfd.readouterr().err
    images = [np.random.default_rng(i).integers(0, 256, (1, 32, 48, 3), dtype=np.uint8) for i in range(2)]
    content = convert_tflite(model, (32, 48), "int8", images)
    assert content and "fully_quantize:" not in capfd.readouterr().err
