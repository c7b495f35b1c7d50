"""Inference speed (the paper's Table II): frames per second and latency after warm-up."""

import functools
import os
import platform
import time

import keras
import numpy as np
import tensorflow as tf

from synergyseg.models.names import FUSED


def traced(fn, **kwargs):
    """`tf.function(fn, **kwargs)` whose traces TensorFlow counts on their own.

    TensorFlow counts retracing per Python code object, so one tf.function per model built from
    the same `def` or lambda (each model timed once, a loop of benchmarks) warns after five models
    that "5 out of the last 5 calls triggered tf.function retracing", though each traces once. A
    `functools.partial` has no code object of its own: each function is counted alone.
    """
    return tf.function(functools.partial(fn), **kwargs)


def device_name():
    """The accelerator the model runs on, e.g. "NVIDIA H100 80GB HBM3", else the CPU's model name."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        name = details.get("device_name", gpus[0].name)
        return f"{len(gpus)} x {name}" if len(gpus) > 1 else name
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU: {cpu} ({os.cpu_count()} logical cores)"


def with_precision(model, precision):
    """`model` itself for "float32"; for "mixed_float16"/"mixed_bfloat16" a clone computing in that
    policy with the same weights (outputs are cast back to float32 by the caller if needed)."""
    if precision == "float32":
        return model
    if precision not in ("mixed_float16", "mixed_bfloat16"):
        raise ValueError(f"precision must be float32, mixed_float16 or mixed_bfloat16, got {precision!r}")

    def clone(layer):
        config = layer.get_config()
        config["dtype"] = keras.DTypePolicy(precision)
        return layer.__class__.from_config(config)

    clone_model = keras.models.clone_model(model, clone_function=clone, recursive=True)
    clone_model.set_weights(model.get_weights())
    return clone_model


def measure(model, height=1024, width=2048, batch_size=1, *, warmup=10, iterations=50,
            jit_compile=False, precision="float32", name=None):
    """Times `model` on random images after `warmup` calls; returns a JSON-ready dict.

    Each timed call runs the model and the argmax and copies the (B, H, W) class map to the host,
    so a call's time is what an application waits for a label map (the host copy is a uint8 map,
    not the probabilities).

    Args:
        model: any model mapping (B, H, W, 3) RGB to (B, H, W, C) probabilities (a dict output
            is timed through its "fused" entry).
        height, width, batch_size: input shape.
        warmup: untimed calls first (graph tracing, XLA compilation, cuDNN autotuning).
        iterations: timed calls.
        jit_compile: compile the call with XLA.
        precision: "float32", "mixed_float16" or "mixed_bfloat16".
        name: label for the table (default: the model's name).

    Returns:
        {"model", "height", "width", "batch_size", "fps" (images per second), "latency_ms_median",
        "latency_ms_p90", "latency_ms" (every timed call), "jit_compile", "precision", "device",
        "iterations", "warmup"}.
    """
    if warmup < 1 or iterations < 1:
        raise ValueError(f"warmup and iterations must be at least 1, got {warmup} and {iterations}")
    run_model = with_precision(model, precision)

    def class_map(images):
        out = run_model(images, training=False)
        if isinstance(out, dict):
            out = out[FUSED]
        return tf.cast(tf.argmax(out, axis=-1), tf.uint8)

    predict = traced(class_map, jit_compile=jit_compile)

    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, (batch_size, height, width, 3)).astype(np.float32))
    for _ in range(warmup):
        predict(images).numpy()
    seconds = []
    for _ in range(iterations):
        start = time.perf_counter()
        predict(images).numpy()  # .numpy() waits for the device: the call is finished here.
        seconds.append(time.perf_counter() - start)
    seconds = np.asarray(seconds)
    return {
        "model": name or model.name,
        "height": height,
        "width": width,
        "batch_size": batch_size,
        "fps": float(batch_size / np.median(seconds)),
        "latency_ms_median": float(1000 * np.median(seconds)),
        "latency_ms_p90": float(1000 * np.percentile(seconds, 90)),
        "latency_ms": [float(1000 * s) for s in seconds],
        "jit_compile": bool(jit_compile),
        "precision": precision,
        "device": device_name(),
        "iterations": iterations,
        "warmup": warmup,
    }
