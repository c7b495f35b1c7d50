"""The real-time table of issue 18 in one run: our presets two- and single-scale next to SegFormer-B0.

Examples:
    python benchmarks/realtime_speed.py                                   # the full table (idle machine)
    python benchmarks/realtime_speed.py --trained runs/realtime-lraspp-large-cut16 runs/realtime
    python benchmarks/realtime_speed.py --models realtime,segformer-b0 --sizes 512x1024 --rounds 5
    python benchmarks/realtime_speed.py --class-map-strides 1,2,4,8                # more class map strides
    python benchmarks/realtime_speed.py --smoke --force                   # plumbing only (64x128, 1 round)

Models: preset names (built with 19 classes and random weights, BatchNorm moving statistics set
from one batch of synthetic scenes so activations have a trained model's scale) or, with
--trained, run folders (their final.keras). Each is timed two-scale (its own fuse_at), single-scale
(`with_fusion("high")`) and, when it fuses at the decoder, two-scale with the same weights fused at
the input size. "segformer-b0" is keras-hub's SegFormer-B0 built from explicit arguments (no
download), run on 512x512 windows: 2 per 512x1024 frame, 8 per 1024x2048 frame (batch 1 each).

Paths: TFLite float32 and full-integer int8 (ai-edge-litert, --threads threads, calibrated on
synthetic scenes), Keras float32 (tf.function); batch 1, uint8 image in, int32 class map out (the
served path: `build_serving_model` / `convert_tflite` with outputs ("class_map",), no
probabilities or uncertainty). Variants fused at the decoder are served at each of
--class-map-strides (`class_map_stride`: the argmax at 1/stride of the image size, repeated over
each cell); variants fused at the input and SegFormer-B0 at stride 1 only. Every entry's
agreement is the % of pixels equal to the exact (stride 1) Keras class map of the same variant.
Every TFLite file and its Keras model are made first; then, per size and model, each entry is
warmed up and the model's entries are timed round-robin (--rounds rounds cycling over its
(variant, stride, path) entries), so the machine's noise hits a model's two- and single-scale
entries alike; models are timed one after another (all at once did not fit in memory).

Refuses to start (exit 2) when the 1-minute load average is >= 0.5, unless --force. Records the
load and `uptime` before and after, the CPU time other processes took while timing, versions and
the command line, in benchmarks/results/realtime_speed.json and .md (--out to change).
"""

import argparse
import gc
import os
import shlex
import subprocess
import sys
import tempfile
import time
from importlib import metadata

import synergyseg  # noqa: E402  (first: TensorFlow loads without its start-up lines, synergyseg.quiet)

import numpy as np  # noqa: E402
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from synergyseg.atomic import write_json, write_text  # noqa: E402
from synergyseg.data.synthetic import render_scene  # noqa: E402
from synergyseg.export import ClassMap, ImagesToFloat, build_serving_model, check_builtin_ops  # noqa: E402
from synergyseg.export import check_int8_scales, check_tflite_size, convert_tflite  # noqa: E402
from synergyseg.export import make_interpreter, undelegated_ops  # noqa: E402
from synergyseg.export.saved_model import SIGNATURE_KEY, serving_module  # noqa: E402
from synergyseg.export.serving import CLASS_MAP, check_serving_options  # noqa: E402
from synergyseg.evaluation.speed import traced  # noqa: E402
from synergyseg.models.flops import model_flops  # noqa: E402
from synergyseg.run_folder import load_model, resolve_model_path  # noqa: E402
from synergyseg.training.config import preset  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import MAX_LOAD, OthersCPU, cpu_name, load_record, wait_for_idle  # noqa: E402

SEGFORMER = "segformer-b0"
DEFAULT_MODELS = ("realtime", "realtime-fast", "realtime-lraspp-large-reduced",
                  "realtime-lraspp-large32", "realtime-lraspp-small32",
                  "realtime-lraspp-small-reduced", SEGFORMER)
PATHS = ("tflite-fp32", "tflite-int8", "keras", "keras-xla")
DEFAULT_PATHS = ("tflite-fp32", "tflite-int8", "keras")
QUANTIZATION = {"tflite-fp32": "float32", "tflite-int8": "int8"}  # each TFLite path's file
# `class_map_stride`s timed for every variant fused at the decoder (1: the exact class map).
DEFAULT_CLASS_MAP_STRIDES = (1, 4)
SERVED = (CLASS_MAP,)  # the outputs a real-time deployment reads
NUM_CLASSES = 19  # Cityscapes: the classes' upsample, softmax and fusion cost what they cost there
# SegFormer-B0 as in its paper (MiT-B0 encoder, all-MLP decoder of 256 channels); its ADE20K
# models run on 512x512 crops, so a frame is cut into 512x512 windows ("per pixel" comparable).
SEGFORMER_WINDOW = 512
MIT_B0 = dict(layerwise_depths=[2, 2, 2, 2], num_layers=4, hidden_dims=[32, 64, 160, 256],
              layerwise_num_heads=[1, 2, 5, 8], layerwise_sr_ratios=[8, 4, 2, 1],
              layerwise_patch_sizes=[7, 3, 3, 3], layerwise_strides=[4, 2, 2, 2],
              max_drop_path_rate=0.1)
SEGFORMER_HEAD_FILTERS = 256
RESULTS = "benchmarks/results/realtime_speed"
# Seeds of the synthetic scenes for each use, apart so no scene is both calibrated on and scored.
BATCHNORM_SEED, CALIBRATION_SEED, AGREEMENT_SEED, TIMING_SEED = 1000, 2000, 3000, 4000
SMOKE = dict(models=("realtime-fast", SEGFORMER), sizes=((64, 128),), rounds=1,
             warmup=1, calibration=1, agreement=1, idle_wait=0)


# --- models -----------------------------------------------------------------------------------

def all_layers(model):
    for layer in getattr(model, "layers", []):
        yield layer
        yield from all_layers(layer)


def set_batchnorm_statistics(model, images):
    """Sets every BatchNorm's moving mean and variance to those of `images` (no weight changes).

    With their initial statistics (mean 0, variance 1) a random MobileNetV3 in inference mode
    shrinks its signal to nothing and every argmax is a tie; one training-mode call with
    momentum 0 gives each BatchNorm the statistics of real activations.
    """
    norms = [l for l in all_layers(model) if isinstance(l, keras.layers.BatchNormalization)]
    momentum = [l.momentum for l in norms]
    for layer in norms:
        layer.momentum = 0.0
    model(images, training=True)
    for layer, m in zip(norms, momentum):
        layer.momentum = m


def synthetic_batch(size, count, seed):
    """`count` synthetic street scenes, uint8 `(count, h, w, 3)`."""
    return np.stack([render_scene(seed + i, *size)[0] for i in range(count)])


def build_preset(name):
    """A preset's two-scale model with 19 classes, random weights and BatchNorm statistics of scenes."""
    config = preset(name, num_classes=NUM_CLASSES)
    keras.utils.set_random_seed(0)
    model = synergyseg.build_synergyseg(
        NUM_CLASSES, backbone=config.backbone, output_stride=config.output_stride,
        fusion=config.fusion, head=config.head, fuse_at=config.fuse_at,
        **{k: getattr(config, k) for k in ("backbone_width", "head_filters")},
        **({k: getattr(config, k) for k in ("low_level_filters", "separable")}
           if config.head == "deeplabv3plus" else {}))
    model = model.with_fusion()  # the one-output model whatever the preset's auxiliary loss
    set_batchnorm_statistics(model.submodel, synthetic_batch((256, 512), 4, BATCHNORM_SEED).astype("float32"))
    return model


def load_trained(run_dir):
    """A trained run folder's final.keras (else the file or folder as `load_model` resolves it)."""
    final = os.path.join(run_dir, "final.keras")
    path = final if os.path.isfile(final) else resolve_model_path(run_dir)
    return synergyseg.with_fusion(load_model(path)), path


def build_segformer(window):
    """keras-hub SegFormer-B0 (MiT-B0 + 256-channel MLP head), 19 classes, on `window` x `window` images.

    Input RGB in [0, 255] (scaled to [-1, 1] first, as a preprocessor would), output logits at the
    input size (keras-hub resizes them bilinearly). Random weights; its one BatchNorm (in the
    head's fuse layer) gets the statistics of synthetic scenes.
    """
    import keras_hub

    keras.utils.set_random_seed(0)
    encoder = keras_hub.models.MiTBackbone(image_shape=(window, window, 3), **MIT_B0)
    backbone = keras_hub.models.SegFormerBackbone(image_encoder=encoder,
                                                  projection_filters=SEGFORMER_HEAD_FILTERS)
    segmenter = keras_hub.models.SegFormerImageSegmenter(backbone=backbone, num_classes=NUM_CLASSES)
    image = keras.Input((window, window, 3))
    model = keras.Model(image, segmenter(keras.layers.Rescaling(1 / 127.5, offset=-1)(image)),
                        name=SEGFORMER)
    set_batchnorm_statistics(model, synthetic_batch((window, window), 2, BATCHNORM_SEED).astype("float32"))
    return model


def variants(label, model, strides, input_fusion=True):
    """`(label, variant name, Keras model, class map strides)` of one two-scale model: as built,
    single-scale, fused at the input (if `input_fusion`); those fused at the decoder at each of
    `strides`, the others at 1."""
    out = [(f"two-scale ({model.fuse_at})", model), (f"single-scale ({model.fuse_at})", model.with_fusion("high"))]
    if model.fuse_at == "decoder" and input_fusion:
        out.append(("two-scale (input)", model.with_fusion(fuse_at="input")))
    return [(label, name, m, tuple(strides) if m.fuse_at == "decoder" else (1,)) for name, m in out]


def served_model(model, stride):
    """uint8 images -> {"class_map": int32} of a SynergySeg `model` at `class_map_stride=stride`."""
    return build_serving_model(model, outputs=SERVED, class_map_stride=stride)


def class_map_model(model):
    """uint8 images -> {"class_map": int32} of a model that is not a SynergySeg (SegFormer-B0)."""
    images = keras.Input(tuple(model.inputs[0].shape[1:3]) + (3,), dtype="uint8", name="images")
    return keras.Model(images, {CLASS_MAP: ClassMap(name=CLASS_MAP)(model(ImagesToFloat()(images)))})


# --- paths ------------------------------------------------------------------------------------

def windows_of(size, window):
    """`(window_size, count)` cutting a frame of `size` into squares (None: the whole frame)."""
    if window is None:
        return size, 1
    h, w = size
    side = min(window, h, w)
    if h % side or w % side:
        raise ValueError(f"size {h}x{w} is not a whole number of {side}x{side} windows")
    return (side, side), (h // side) * (w // side)


def windowed(fn, size, window_size):
    """A frame -> class map function running `fn` on each window of the frame in turn (batch 1)."""
    if window_size == size:
        return fn
    (h, w), (wh, ww) = size, window_size

    def run(frame):
        out = np.empty((1, h, w), np.int32)
        for y in range(0, h, wh):
            for x in range(0, w, ww):
                out[:, y:y + wh, x:x + ww] = fn(np.ascontiguousarray(frame[:, y:y + wh, x:x + ww]))
        return out
    return run


def keras_runner(served, jit_compile=False):
    """uint8 images -> class map (numpy) of the serving model `served`, through a tf.function."""
    fn = traced(lambda x: served(x, training=False)[CLASS_MAP], jit_compile=jit_compile)
    return lambda images: fn(tf.constant(images)).numpy()


def tflite_runner(content, threads):
    runner = make_interpreter(model_content=content, num_threads=threads).get_signature_runner(SIGNATURE_KEY)
    return lambda images: runner(images=images)[CLASS_MAP]


def convert_other(model, size, quantization, calibration):
    """The TFLite flatbuffer of `class_map_model(model)` at `size`, for a model `convert_tflite`
    does not take (SegFormer-B0).

    The converter settings repeat export's (synergyseg/export/tflite.py `_convert`): from a
    SavedModel of `serving_module` (variables frozen), builtin ops only, int8 full-integer with
    `calibration` as the representative dataset; then the same checks as `convert_tflite`.
    """
    height, width = check_tflite_size(size)
    _at_size(model, (height, width))
    if quantization not in QUANTIZATION.values():
        raise ValueError(f"quantization must be one of {tuple(QUANTIZATION.values())}, got {quantization!r}")
    module = serving_module(class_map_model(model), input_shape=(1, height, width, 3))
    with tempfile.TemporaryDirectory(prefix="realtime-speed-tflite-") as saved_model_dir:
        tf.saved_model.save(module, saved_model_dir, signatures={SIGNATURE_KEY: module.serve})
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, [SIGNATURE_KEY])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantization == "int8":
            images = list(calibration or [])
            if not images:
                raise ValueError("int8 TFLite needs at least one calibration image")
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.representative_dataset = lambda: ([image] for image in images)
        content = converter.convert()
    check_builtin_ops(content)
    if quantization == "int8":
        check_int8_scales(content)
    return content


def _at_size(model, size):
    """`model` itself (any size) or, for a fixed-size model, checked against `size`."""
    fixed = tuple(model.inputs[0].shape[1:3])
    if None not in fixed and fixed != tuple(size):
        raise ValueError(f"{model.name} takes {fixed[0]}x{fixed[1]} images, not {size[0]}x{size[1]}")
    return model


def tf_profiler_flops(model, size):
    """FLOPs of every op of `model`'s graph at `size` by tf.profiler (its own per-op conventions)."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    from tensorflow.python.util import deprecation

    fn = traced(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec((1, *size, 3), tf.float32))
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    graph = convert_variables_to_constants_v2(fn).graph
    # The v1 profiler is the one counter of both op families; its own calls of deprecated graph
    # utilities warn, which no caller can act on.
    with deprecation.silence():
        return tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops


# --- the run ----------------------------------------------------------------------------------

def prepare(args):
    """Every entry's model, runner factory, GFLOPs, undelegated ops and agreement, before any timing."""
    sources = []
    for name in args.models:
        if name == SEGFORMER:
            sources.append((SEGFORMER, None))
        else:
            print(f"building {name} ...", flush=True)
            sources.append((name, build_preset(name)))
    for run_dir in args.trained:
        model, path = load_trained(run_dir)
        print(f"loaded {path}", flush=True)
        sources.append((os.path.basename(os.path.normpath(run_dir)), model))
    for name, model in sources:  # a stride a model cannot serve fails here, before any conversion
        if model is not None and model.fuse_at == "decoder":
            for stride in args.class_map_strides:
                try:
                    check_serving_options(model, SERVED, stride)
                except ValueError as e:
                    raise ValueError(f"--class-map-strides {stride} for {name}: {e}") from None

    entries, segformers, conversions = [], {}, {}
    for size in args.sizes:
        frames = synthetic_batch(size, args.agreement, AGREEMENT_SEED)
        for name, two_scale in sources:
            if two_scale is None:
                window_size, count = windows_of(size, SEGFORMER_WINDOW)
                if window_size not in segformers:  # one model (and TFLite file) per window size
                    segformers[window_size] = build_segformer(window_size[0])
                rows = [(name, f"{count} windows {window_size[0]}x{window_size[1]}", segformers[window_size], (1,))]
            else:
                window_size, count = size, 1
                rows = variants(name, two_scale, args.class_map_strides, args.input_fusion)
            for label, variant, model, strides in rows:
                entries += prepare_variant(args, label, variant, model, two_scale is not None, strides, size,
                                           window_size, count, frames, conversions)
            gc.collect()
    return entries


def prepare_variant(args, label, variant, model, ours, strides, size, window_size, count, frames, conversions):
    """The entries of one variant at one size: each of `strides` on each of `args.paths`.

    `ours`: a SynergySeg (served by `build_serving_model` and `convert_tflite` at each stride),
    else a model served by `class_map_model` and `convert_other` (stride 1 only). Each entry's
    agreement is against the exact (stride 1) Keras class map of `model` on `frames`; the
    stride 1 Keras entry is that reference and has none.
    """
    print(f"  {label} {variant} {size[0]}x{size[1]}", flush=True)
    base = dict(model=label, variant=variant, size=f"{size[0]}x{size[1]}", windows=count,
                gflops=None, gflops_tf_profiler=None)
    if count == 1:
        base["gflops"] = round(model_flops(model, *size) / 1e9, 3)
    try:
        base["gflops_tf_profiler"] = round(count * tf_profiler_flops(model, window_size) / 1e9, 3)
    except Exception as e:  # a counter's gap is reported, not fatal
        base["gflops_tf_profiler_error"] = f"{type(e).__name__}: {e}"[:300]

    def served(stride):
        return served_model(model, stride) if ours else class_map_model(model)

    def keras_at(stride, jit_compile=False):
        return windowed(keras_runner(served(stride), jit_compile), size, window_size)

    exact = keras_at(1)  # the reference of every entry's agreement (and the stride 1 keras entry)
    expected = [exact(frames[i:i + 1]) for i in range(len(frames))]
    out = []
    for stride in strides:
        keras_fn = exact if stride == 1 else (keras_at(stride) if "keras" in args.paths else None)
        for path in args.paths:
            entry = dict(base, class_map_stride=stride, path=path)
            if path == "keras":  # the function already traced (for the agreement)
                run = keras_fn
                entry["runner"] = lambda run=run: run
            elif path == "keras-xla":
                run = keras_at(stride, jit_compile=True)
                entry["runner"] = lambda run=run: run
            else:
                quantization = QUANTIZATION[path]
                calibration = None
                if quantization == "int8":
                    scenes = synthetic_batch(size, args.calibration, CALIBRATION_SEED)
                    calibration = [np.ascontiguousarray(s[None, y:y + window_size[0], x:x + window_size[1]])
                                   for s in scenes for y in range(0, size[0], window_size[0])
                                   for x in range(0, size[1], window_size[1])][:max(args.calibration, 1)]
                key = (id(model), window_size, quantization, stride)
                if key not in conversions:  # the file, or why it could not be made
                    try:
                        conversions[key] = (convert_tflite(model, window_size, quantization, calibration,
                                                           outputs=SERVED, class_map_stride=stride) if ours else
                                            convert_other(model, window_size, quantization, calibration))
                    except Exception as e:
                        conversions[key] = e
                content = conversions[key]
                if isinstance(content, Exception):
                    e = content
                    entry["error"] = f"TFLite {quantization} conversion: {type(e).__name__}: {e}"[:500]
                    print(f"    {path} stride {stride}: {entry['error']}", flush=True)
                    out.append(entry)
                    continue
                entry["tflite_bytes"] = len(content)
                entry["undelegated_ops"] = undelegated_ops(content, args.threads)
                entry["runner"] = (lambda c=content: windowed(tflite_runner(c, args.threads), size, window_size))
                run = entry["runner"]()
            reference = path == "keras" and stride == 1
            entry["agreement_pct"] = None if reference or not expected else round(100 * float(np.mean(
                [(run(frames[i:i + 1]) == e).mean() for i, e in enumerate(expected)])), 3)
            out.append(entry)
    return out


def time_round_robin(entries, frame, warmup, rounds, calls=1):
    """Median ms per entry: each warmed up, then `rounds` rounds, each timing every entry in turn
    over `calls` back-to-back calls (the round's time is their mean)."""
    runners = [e["runner"]() for e in entries]
    for run in runners:
        for _ in range(warmup):
            run(frame)
    times = [[] for _ in entries]
    for _ in range(rounds):
        for run, ts in zip(runners, times):
            start = time.perf_counter()
            for _ in range(calls):
                np.asarray(run(frame))
            ts.append(1000 * (time.perf_counter() - start) / calls)
    for entry, ts in zip(entries, times):
        entry["times_ms"] = [round(t, 3) for t in ts]
        entry["ms"] = round(float(np.median(ts)), 3)
        entry["fps"] = round(1000 / entry["ms"], 3)


def paired_ratio(times, reference):
    """Median over rounds of `times[i] / reference[i]`: the two entries were timed in the same round,
    seconds apart, so the machine's slower and faster spells cancel in each quotient."""
    if not times or len(times) != len(reference):
        return None
    return float(np.median(np.asarray(times) / np.asarray(reference)))


def ratios(entries):
    """Two-scale / single-scale time per model, size, path and class map stride (the medians'
    quotient, and the median of the per-round quotients); each entry's FPS / SegFormer-B0's (at the
    same size and path)."""
    timed = [e for e in entries if "ms" in e]
    same = ("model", "size", "path", "class_map_stride")
    two_over_single = []
    for e in timed:
        if not e["variant"].startswith("two-scale"):
            continue
        fuse_at = e["variant"].split("(")[1].rstrip(")")
        single = next((s for s in timed if all(s[k] == e[k] for k in same)
                       and s["variant"].startswith("single-scale")), None)
        if single:
            two_over_single.append(dict(model=e["model"], fuse_at=fuse_at, size=e["size"], path=e["path"],
                                        class_map_stride=e["class_map_stride"],
                                        two_scale_ms=e["ms"], single_scale_ms=single["ms"],
                                        single_fuse_at=single["variant"].split("(")[1].rstrip(")"),
                                        ratio=e["ms"] / single["ms"],
                                        paired_ratio=paired_ratio(e.get("times_ms"), single.get("times_ms"))))
    vs_segformer = []
    for e in timed:
        reference = next((s for s in timed if s["model"] == SEGFORMER and (s["size"], s["path"]) == (e["size"], e["path"])), None)
        if reference and e["model"] != SEGFORMER:
            vs_segformer.append(dict(model=e["model"], variant=e["variant"], class_map_stride=e["class_map_stride"],
                                     size=e["size"], path=e["path"], fps=e["fps"], segformer_fps=reference["fps"],
                                     ratio=e["fps"] / reference["fps"]))
    return dict(two_over_single=two_over_single, vs_segformer=vs_segformer)


def versions():
    found = {"tensorflow": tf.__version__, "keras": keras.__version__}
    for package in ("ai-edge-litert", "keras-hub"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def markdown(result):
    lines = [f"# Real-time speed table ({result['date']})", "",
             f"`{result['command']}`", "",
             f"{result['cpu']}, {result['cores']} cores; TFLite {result['threads']} threads (ai-edge-litert "
             f"{result['versions']['ai-edge-litert']}), TensorFlow {result['versions']['tensorflow']}, "
             f"Keras {result['versions']['keras']}, keras-hub {result['versions']['keras-hub']}. Batch 1, uint8 "
             f"frame in, class map out; median of {result['settings']['rounds']} round-robin rounds "
             f"(each the mean of {result['settings'].get('calls', 1)} back-to-back calls) after "
             f"{result['settings']['warmup']} warm-up calls.", "",
             f"Load before: `{result['load']['start']['uptime']}`; before timing: "
             f"`{result['load']['before_timing']['uptime']}`; after: `{result['load']['end']['uptime']}`. "
             f"Other processes' CPU while timing (share of all cores): "
             f"{', '.join(f'{k} {v}' for k, v in result['others_cpu_share'].items())}.", ""]
    if not result["settings"]["trained"]:
        lines += ["Random weights: the agreement column (vs the exact Keras class map) only checks the "
                  "plumbing; it is meaningful for --trained runs.", ""]
    key = ("model", "variant", "class_map_stride", "size", "path")
    speedup = {tuple(r[k] for k in key): r["ratio"] for r in result["ratios"]["vs_segformer"]}
    lines += ["| model | variant | class map stride | size | path | GFLOPs (ours) | GFLOPs (tf.profiler) | ms | "
              "FPS | x SegFormer-B0 | agreement % | ops XNNPACK leaves |",
              "|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for e in result["entries"]:
        def fmt(v, spec):
            return "" if v is None else format(v, spec)
        ops = ", ".join(f"{k} x{v}" for k, v in sorted(e.get("undelegated_ops", {}).items()))
        if "error" in e:
            ms, fps, ops = "failed", "", e["error"].split("\n")[0][:120]
        else:
            ms, fps = fmt(e.get("ms"), ".1f"), fmt(e.get("fps"), ".1f")
        agreement = ("reference" if e["path"] == "keras" and e["class_map_stride"] == 1
                     else fmt(e.get("agreement_pct"), ".2f"))
        lines.append(f"| {e['model']} | {e['variant']} | {e['class_map_stride']} | {e['size']} | {e['path']} | "
                     f"{fmt(e['gflops'], '.1f')} | {fmt(e['gflops_tf_profiler'], '.1f')} | {ms} | {fps} | "
                     f"{fmt(speedup.get(tuple(e[k] for k in key)), '.2f')} | {agreement} | {ops} |")
    lines += ["", "| model | two-scale fused at | class map stride | size | path | two-scale ms | single-scale ms | "
              "ratio | median per-round ratio |", "|---|---|---:|---|---|---:|---:|---:|---:|"]
    for r in result["ratios"]["two_over_single"]:
        paired = r.get("paired_ratio")
        lines.append(f"| {r['model']} | {r['fuse_at']} | {r['class_map_stride']} | {r['size']} | {r['path']} | "
                     f"{r['two_scale_ms']:.1f} | {r['single_scale_ms']:.1f} | {r['ratio']:.2f} | "
                     f"{'' if paired is None else format(paired, '.2f')} |")
    lines += ["", *[f"- {n}" for n in result["notes"]], ""]
    return "\n".join(lines)


NOTES = [
    "GFLOPs (ours): synergyseg.models.flops.model_flops per frame (convolutions, resizes, softmax, "
    "fusion; 2 per multiply-add). It does not count SegFormer's attention and MLP matmuls, so it is "
    "left empty there. Both GFLOPs columns are the model's up to its full-size fused map, the same on "
    "every class map stride row (a stride-S class map resizes S*S fewer values instead, and takes "
    "the argmax of those).",
    "GFLOPs (tf.profiler): tf.compat.v1.profiler float_operation on the frozen float graph, every op "
    "by its own convention (matmuls and convs 2 per multiply-add, elementwise ops too); the one "
    "counter that covers both families, per frame (SegFormer: per window x windows).",
    "SegFormer-B0: keras-hub MiTBackbone (depths 2,2,2,2, dims 32,64,160,256, heads 1,2,5,8, sr "
    "8,4,2,1, patches 7,3,3,3, strides 4,2,2,2) + SegFormerBackbone (256) + SegFormerImageSegmenter "
    "(19 classes), random weights, run window by window (batch 1) and the class maps tiled.",
    "Class map stride S (`build_serving_model` / `convert_tflite` class_map_stride, variants fused "
    "at the decoder): the fused map resized to 1/S of the frame, its argmax there repeated over "
    "each S x S cell; 1 is the exact argmax of the full-size map.",
    "int8: full-integer, calibrated on synthetic scenes. Agreement = % of pixels whose class equals "
    "the exact (stride 1) Keras class map of the same model variant, on synthetic scenes at that "
    "size: the TFLite rows show conversion and quantization, the stride-S rows also the pixels the "
    "strided class map changes; the Keras stride 1 row is the reference itself.",
]


def parse_size(text):
    h, w = text.lower().split("x")
    return int(h), int(w)


def parse_strides(text):
    """`"1,4"` -> `(1, 4)`; raises ValueError naming the value unless distinct positive integers."""
    try:
        strides = tuple(int(s) for s in text.split(","))
    except ValueError:
        strides = ()
    if not strides or min(strides) < 1 or len(set(strides)) != len(strides):
        raise ValueError(f"--class-map-strides must be distinct positive integers separated by commas, got {text!r}")
    return strides


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=None,
                        help=f"comma list of presets and/or {SEGFORMER!r} (default: {','.join(DEFAULT_MODELS)}; "
                             f"with --trained: {SEGFORMER}; '' for none)")
    parser.add_argument("--trained", nargs="+", default=[], metavar="RUN_DIR", help="trained run folders (final.keras)")
    parser.add_argument("--sizes", default="512x1024,1024x2048", help="comma list of HxW frame sizes")
    parser.add_argument("--paths", default=",".join(DEFAULT_PATHS), help=f"comma list of {PATHS}")
    parser.add_argument("--class-map-strides", default=",".join(map(str, DEFAULT_CLASS_MAP_STRIDES)),
                        help="comma list of class_map_stride values for the variants fused at the decoder "
                             "(1: exact; others at stride 1 only)")
    parser.add_argument("--rounds", type=int, default=7, help="round-robin rounds (median over them)")
    parser.add_argument("--no-input-fusion", dest="input_fusion", action="store_false",
                        help="skip the variant with the same weights fused at the input size")
    parser.add_argument("--calls", type=int, default=1,
                        help="back-to-back calls per entry and round (the round's time is their mean)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per entry first")
    parser.add_argument("--threads", type=int, default=2, help="TFLite interpreter threads")
    parser.add_argument("--calibration", type=int, default=4, help="int8 calibration scenes")
    parser.add_argument("--agreement", type=int, default=4, help="synthetic scenes scored for TFLite vs Keras agreement")
    parser.add_argument("--out", default=None, help=f"output prefix for .json and .md (default {RESULTS}; "
                                                    "with --smoke a temporary folder)")
    parser.add_argument("--smoke", action="store_true", help="plumbing check: 64x128, 1 round, two models")
    parser.add_argument("--force", action="store_true", help=f"run even if the 1-minute load is >= {MAX_LOAD}")
    parser.add_argument("--before-timing", default=None, metavar="COMMAND",
                        help="shell command run after the conversions, before waiting for an idle "
                             "machine (e.g. one that pauses other jobs); with it the load is checked "
                             "then instead of at the start")
    parser.add_argument("--idle-wait", type=float, default=300,
                        help=f"seconds to wait, after the conversions and before timing, for the load they "
                             f"raised to fall below {MAX_LOAD} (0 with --smoke)")
    args = parser.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
        args.models = ",".join(args.models)
        args.sizes = ",".join(f"{h}x{w}" for h, w in args.sizes)
    if args.models is None:
        args.models = SEGFORMER if args.trained else ",".join(DEFAULT_MODELS)
    args.models = [m for m in args.models.split(",") if m]
    args.sizes = [parse_size(s) for s in args.sizes.split(",")]
    args.paths = args.paths.split(",")
    try:
        args.class_map_strides = parse_strides(args.class_map_strides)
    except ValueError as e:
        parser.error(str(e))
    for name in args.models:
        if name != SEGFORMER:
            try:
                preset(name)
            except ValueError as e:
                parser.error(str(e))
    for path in args.paths:
        if path not in PATHS:
            parser.error(f"unknown path {path!r}; expected some of {PATHS}")
    if args.calls < 1 or args.rounds < 1:
        parser.error(f"--calls and --rounds must be at least 1, got {args.calls} and {args.rounds}")
    if args.out is None:
        args.out = os.path.join(tempfile.mkdtemp(prefix="realtime_speed_smoke-"), "realtime_speed") if args.smoke else RESULTS
    return args


def main(argv=None):
    args = parse_args(argv)
    start = load_record()
    if start["loadavg"][0] >= MAX_LOAD and not (args.force or args.before_timing):
        print(f"refusing to time: 1-minute load average {start['loadavg'][0]:.2f} >= {MAX_LOAD} "
              f"({start['uptime']}); wait for an idle machine or pass --force", file=sys.stderr)
        return 2
    command = shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(["realtime_speed.py", *argv])
    print(f"# {start['time']}  {cpu_name()}  load {start['loadavg']}", flush=True)

    started = time.perf_counter()
    entries = prepare(args)
    prepare_s = time.perf_counter() - started
    if args.before_timing:  # e.g. pause the machine's other jobs once the conversions are done
        print(f"running --before-timing: {args.before_timing}", flush=True)
        subprocess.run(args.before_timing, shell=True, check=True)
    before = wait_for_idle(args.idle_wait)  # after our own conversions' load
    others = {}
    for size in args.sizes:
        label = f"{size[0]}x{size[1]}"
        group = [e for e in entries if e["size"] == label and "runner" in e]
        frame = synthetic_batch(size, 1, TIMING_SEED)
        print(f"timing {len(group)} entries at {label} ...", flush=True)
        with OthersCPU() as cpu:
            # One model's entries at a time: every TFLite interpreter holds its arena while it is
            # live, and 99 entries at 1024x2048 ran out of 24 GiB (killed) when all were at once.
            for model in dict.fromkeys(e["model"] for e in group):
                time_round_robin([e for e in group if e["model"] == model], frame, args.warmup,
                                 args.rounds, args.calls)
                gc.collect()
        others[label] = cpu.share
        for e in group:
            print(f"| {e['model']} | {e['variant']} | stride {e['class_map_stride']} | {e['size']} | {e['path']} | "
                  f"{e['ms']:.1f} ms | {e['fps']:.1f} FPS |", flush=True)
        gc.collect()
    end = load_record()
    timing_s = time.perf_counter() - started - prepare_s

    for e in entries:
        e.pop("runner", None)
    result = dict(
        command=command, date=start["time"], cpu=cpu_name(), cores=os.cpu_count(), threads=args.threads,
        versions=versions(), load=dict(start=start, before_timing=before, end=end), others_cpu_share=others,
        settings=dict(models=args.models, trained=args.trained, sizes=[f"{h}x{w}" for h, w in args.sizes],
                      paths=args.paths, class_map_strides=list(args.class_map_strides), rounds=args.rounds, calls=args.calls, warmup=args.warmup, calibration=args.calibration,
                      agreement=args.agreement, smoke=args.smoke, forced=args.force,
                      segformer_window=SEGFORMER_WINDOW, num_classes=NUM_CLASSES),
        wall_s=dict(prepare=round(prepare_s, 1), timing=round(timing_s, 1)),
        entries=entries, ratios=ratios(entries), notes=NOTES)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_json(args.out + ".json", result, sort_keys=False)
    write_text(args.out + ".md", markdown(result))
    print(markdown(result))
    print(f"wrote {args.out}.json and {args.out}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
