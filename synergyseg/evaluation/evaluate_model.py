"""The whole evaluation of one model: accuracy, fusion ablation, speed, pictures, Cityscapes files.

`evaluate.py` parses its command line into `EvaluationOptions` and calls `evaluate_model`;
everything it writes lands in `options.out_dir`:

    report.md              all tables (the terminal shows the same)
    results.json           all numbers (IoU as fractions, absent classes as null); written last
    accuracy.csv           per-class IoU of the model (Table I)
    ablation.csv           per-class IoU of each fusion on the same weights
    speed.csv              FPS and latency of the two-scale and single-scale models (Table II)
    gated.csv              per-class IoU of gated inference (`gated`, `gated_thresholds`), beside two-scale
    confusion_matrix.csv   pixel counts, rows = labels, columns = predictions
    figures/*.png          qualitative grid, per-class IoU bars, normalized confusion matrix
"""

import csv
import dataclasses
import io
import os

from synergyseg.evaluation import figures, report, speed
from synergyseg.evaluation.ablation import ABLATION_FUSIONS
from synergyseg.evaluation.cityscapes_results import CityscapesResultWriter
from synergyseg.evaluation.evaluator import ExampleCollector, evaluate_batches, validation_batches
from synergyseg.evaluation.loading import dataset_info, num_outputs
from synergyseg.atomic import write_json, write_text
from synergyseg.data.pipeline import naming_bad_records
from synergyseg.run_folder import RunFolder, load_model, resolve_model_path
from synergyseg.evaluation.predictor import MODEL_KEY, Predictor, is_two_scale
from synergyseg.models.gated import DEFAULT_MARGIN, DEFAULT_TILE_SIZE, check_gating, gated_synergyseg
from synergyseg.models.synergy import SynergySeg


@dataclasses.dataclass
class EvaluationOptions:
    """What to evaluate and how; `evaluate.py`'s flags map one to one onto these fields."""

    run_or_model: str
    data: str = None  # validation TFRecord glob; default: the run config's val_pattern
    out_dir: str = None  # default: RUN/evaluation, or <model>-evaluation beside a .keras file
    dataset: str = None  # synthetic | cityscapes | mapillary; default: the run config's
    mapillary_config: str = None
    batch_size: int = 1
    limit: int = None  # evaluate the first N images only
    resize_factor: float = None  # run the model on resized images, score at the label's size
    flip: bool = False  # horizontal-flip test-time augmentation
    ablation: tuple = ABLATION_FUSIONS  # empty: no ablation
    gated: tuple = ()  # fractions of tiles for gated inference (models/gated.py), scored and timed
    gated_thresholds: tuple = ()  # uncertainty thresholds for gated inference, scored and timed
    num_figures: int = 4  # images in the qualitative grid; 0: no figures
    cityscapes_results: str = None  # folder for label-id PNGs (Cityscapes benchmark layout)
    accuracy: bool = True  # False: only the speed (no data needed)
    speed: bool = True
    speed_size: tuple = (1024, 2048)
    speed_batch_size: int = 1
    speed_warmup: int = 10
    speed_iterations: int = 50
    jit_compile: bool = False
    precision: str = "float32"
    progress: bool = True


# Written last: an evaluation folder without it was interrupted.
RESULTS_JSON = "results.json"


def evaluation_finished(out_dir):
    """True when `out_dir` holds a finished evaluation (its results.json, written last)."""
    return os.path.isfile(os.path.join(out_dir, RESULTS_JSON))


def default_out_dir(run_or_model):
    """RUN/evaluation for a run folder, `<stem>-evaluation` beside a `.keras` file."""
    if os.path.isdir(run_or_model):
        return os.path.join(run_or_model, "evaluation")
    return os.path.splitext(run_or_model)[0] + "-evaluation"


def _check(options):
    if options.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {options.batch_size}")
    if options.limit is not None and options.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {options.limit}")
    if options.resize_factor is not None and not 0 < options.resize_factor <= 4:
        raise ValueError(f"--resize-factor must be in (0, 4], got {options.resize_factor}")
    if options.num_figures < 0:
        raise ValueError(f"--figures must be 0 or more, got {options.num_figures}")
    for fraction in options.gated:
        check_gating(DEFAULT_TILE_SIZE, DEFAULT_MARGIN, fraction, None, None, "low")
    for threshold in options.gated_thresholds:
        check_gating(DEFAULT_TILE_SIZE, DEFAULT_MARGIN, None, threshold, None, "low")


def evaluate_model(options, log=print):
    """Runs every part `options` asks for, writes the files listed above and returns results.json's dict."""
    _check(options)
    model_path = resolve_model_path(options.run_or_model)
    config = RunFolder.of_model(model_path).config()
    out_dir = options.out_dir or default_out_dir(options.run_or_model)
    if not options.accuracy:
        return _speed_only(model_path, out_dir, options, log)
    data = options.data or (config.val_files if config else None)
    if not data:
        raise ValueError(f"no validation data: pass --data (the run folder of {model_path!r} names none)")
    model = load_model(model_path)
    num_classes = num_outputs(model)
    info, label_values = _dataset(options, config, num_classes)

    fusions = tuple(options.ablation) if is_two_scale(model) else ()
    predictor = Predictor(model, fusions=fusions, flip=options.flip)
    collector = ExampleCollector(options.num_figures)
    visitors = [collector] if options.num_figures else []
    writer = None
    if options.cityscapes_results:
        writer = CityscapesResultWriter(options.cityscapes_results)
        visitors.append(writer)

    log(f"Evaluating {model_path} on {data} ({info.name}, {num_classes} scored classes)")
    batches = validation_batches(data, options.batch_size, resize_factor=options.resize_factor,
                                 limit=options.limit)
    total = None if options.limit is None else -(-options.limit // options.batch_size)
    with naming_bad_records(data):  # tf.data's "corrupted record at 12" does not name the file
        matrices = evaluate_batches(predictor, batches, num_classes, visitors=visitors,
                                    progress=options.progress, total=total)
    scores = {key: m.scores() for key, m in matrices.items()}

    results = {
        "model": os.path.abspath(model_path),
        "data": data,
        "dataset": info.name,
        "scored_classes": num_classes,
        "label_values": label_values,
        "class_names": list(info.class_names),
        "flip": options.flip,
        "resize_factor": options.resize_factor,
        "limit": options.limit,
        "images": matrices[MODEL_KEY].images,
        "fusion": _model_fusion(model),
        "accuracy": report.scores_record(scores[MODEL_KEY], info.class_names),
        "ablation": {f: report.scores_record(scores[f], info.class_names) for f in fusions},
    }
    sections = [_accuracy_section(results, scores, info)]
    files = {
        "accuracy.csv": report.iou_csv({MODEL_KEY: scores[MODEL_KEY]}, info.class_names),
        "confusion_matrix.csv": report.confusion_csv(matrices[MODEL_KEY].matrix, info.class_names),
    }
    if fusions:
        ablation = {f: scores[f] for f in fusions}
        sections.append(
            "## Fusion ablation (same weights)\n\n" + report.summary_markdown(ablation) + "\n\n"
            + report.iou_markdown(ablation, info.class_names))
        files["ablation.csv"] = report.iou_csv(ablation, info.class_names)
    elif options.ablation:
        sections.append("## Fusion ablation\n\nSkipped: the model is single-scale (it has no fusion).")
    gated = _gated_models(model, options)
    if gated:
        columns = {"two-scale": scores[MODEL_KEY]}
        for label, gated_model in gated:
            log(f"Evaluating {label}...")
            columns[label] = evaluate_batches(Predictor(gated_model), batches, num_classes,
                                              progress=options.progress, total=total)[MODEL_KEY].scores()
        results["gated"] = {label: report.scores_record(columns[label], info.class_names) for label, _ in gated}
        sections.append("## Gated inference (same weights)\n\n" + report.summary_markdown(columns) + "\n\n"
                        + report.iou_markdown(columns, info.class_names))
        files["gated.csv"] = report.iou_csv(columns, info.class_names)

    if options.speed:
        results["speed"] = _measure_speed(model, predictor.two_scale, options, log)
        sections.append(f"## Speed\n\n{report.speed_markdown(results['speed'])}")
        files["speed.csv"] = _speed_csv(results["speed"])
    if options.num_figures:
        results["figures"] = _write_figures(out_dir, collector.examples, scores[MODEL_KEY],
                                            matrices[MODEL_KEY].matrix, info)
    if writer is not None:
        results["cityscapes_results"] = {"dir": os.path.abspath(options.cityscapes_results),
                                         "files": len(writer.written)}
        sections.append(f"Cityscapes result files: {len(writer.written)} label-id PNGs in "
                        f"{options.cityscapes_results}")

    return _write(out_dir, results, sections, files, log)


def _dataset(options, config, num_classes):
    """`(DatasetInfo, label values)` of the options' dataset, else the run config's."""
    dataset = options.dataset or (config.dataset if config else None)
    mapillary_config = options.mapillary_config or (config.mapillary_config if config else None)
    info, label_values = dataset_info(dataset, num_classes, mapillary_config)
    if options.cityscapes_results and info.name != "cityscapes":
        raise ValueError(f"--cityscapes-results needs a Cityscapes model; this one is for {info.name!r}")
    return info, label_values


def _speed_only(model_path, out_dir, options, log):
    if not options.speed:
        raise ValueError("nothing to do: both the accuracy and the speed measurement are switched off")
    model = load_model(model_path)
    measurements = _measure_speed(model, is_two_scale(model), options, log)
    results = {"model": os.path.abspath(model_path), "speed": measurements}
    return _write(out_dir, results, [f"## Speed\n\n{report.speed_markdown(measurements)}"],
                  {"speed.csv": _speed_csv(measurements)}, log)


def _write(out_dir, results, sections, files, log):
    """Writes the tables `files`, report.md from `sections` and results.json; returns `results`."""
    markdown = "\n\n".join(sections) + "\n"
    for name, text in files.items():
        write_text(os.path.join(out_dir, name), text)
    write_text(os.path.join(out_dir, "report.md"), markdown)
    write_json(os.path.join(out_dir, RESULTS_JSON), results, sort_keys=False)
    log("\n" + markdown)
    log(f"Wrote {out_dir}")
    return results


def _model_fusion(model):
    return type(model.fusion).__name__ if isinstance(model, SynergySeg) else None


def _accuracy_section(results, scores, info):
    s = scores[MODEL_KEY]
    acc = results["accuracy"]
    absent = acc["absent_classes"]
    lines = [
        "## Accuracy",
        "",
        f"- model: `{results['model']}` (fusion: {results['fusion'] or 'none, single-scale'})",
        f"- data: `{results['data']}`" + f" ({results['images']} images)",
        f"- dataset: {info.name}, {results['scored_classes']} scored classes of "
        f"{results['label_values']} label values; label 255 ignored",
        f"- test-time: flip {'on' if results['flip'] else 'off'}, resize factor "
        f"{results['resize_factor'] or 1}",
        f"- mIoU **{100 * s.mean_iou:.2f}** over {int(s.present.sum())} present classes, pixel accuracy "
        f"{100 * s.pixel_accuracy:.2f}, {s.pixels} scored pixels",
        f"- absent from labels and predictions (no IoU, not in the mean): {', '.join(absent) or 'none'}",
        "",
        report.iou_markdown({"IoU (%)": s}, info.class_names),
    ]
    return "\n".join(lines)


def _measure_speed(model, two_scale, options, log):
    height, width = options.speed_size
    models = [("two-scale", model), ("single-scale", model.submodel)] if two_scale else [("single-scale", model)]
    models += _gated_models(model, options)
    measurements = []
    for label, m in models:
        log(f"Timing the {label} model at {height}x{width}, batch {options.speed_batch_size}...")
        measurements.append(speed.measure(
            m, height, width, options.speed_batch_size, warmup=options.speed_warmup,
            iterations=options.speed_iterations, jit_compile=options.jit_compile,
            precision=options.precision, name=label))
    return measurements


def _gated_models(model, options):
    """`[(label, GatedSynergySeg)]` for each of `options.gated` (fractions) and `options.gated_thresholds`."""
    settings = [(f"gated {f:g}", {"fraction": f}) for f in options.gated]
    settings += [(f"gated >{t:g}", {"threshold": t}) for t in options.gated_thresholds]
    if settings and not is_two_scale(model):
        raise ValueError("--gated and --gated-threshold need a two-scale SynergySeg model; this one is single-scale")
    return [(label, gated_synergyseg(model, **knobs)) for label, knobs in settings]


def _speed_csv(measurements):
    out = io.StringIO()
    keys = ["model", "height", "width", "batch_size", "fps", "latency_ms_median", "latency_ms_p90",
            "jit_compile", "precision", "device", "warmup", "iterations"]
    writer = csv.DictWriter(out, keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(measurements)
    return out.getvalue()


def _write_figures(out_dir, examples, scores, matrix, info):
    paths = {
        "qualitative": os.path.join(out_dir, "figures", "qualitative.png"),
        "iou": os.path.join(out_dir, "figures", "per_class_iou.png"),
        "confusion": os.path.join(out_dir, "figures", "confusion_matrix.png"),
    }
    figures.qualitative_grid(paths["qualitative"], examples, info.class_names, info.colors, info.ignore_label)
    figures.iou_bar_chart(paths["iou"], scores.iou, info.class_names,
                          title=f"per-class IoU ({info.name}, mIoU {100 * scores.mean_iou:.1f})")
    figures.confusion_figure(paths["confusion"], matrix, info.class_names)
    return paths
