"""Tables of evaluation results: Markdown for people, CSV for spreadsheets, JSON for programs.

IoU values are fractions (0..1) in JSON and CSV and percentages in Markdown, as in the paper's
tables. A class absent from both labels and predictions has no IoU: `null` in JSON, empty in CSV,
"—" in Markdown; it is left out of the mean.
"""

import csv
import io
import math


ABSENT = "—"


def _iou_or_none(value):
    return None if math.isnan(value) else float(value)


def scores_record(scores, class_names):
    """A JSON-ready dict of one `Scores`: mIoU, pixel accuracy and IoU per class name."""
    return {
        "mean_iou": _iou_or_none(scores.mean_iou),
        "pixel_accuracy": _iou_or_none(scores.pixel_accuracy),
        "scored_pixels": scores.pixels,
        "present_classes": int(scores.present.sum()),
        "absent_classes": [n for n, p in zip(class_names, scores.present) if not p],
        "per_class_iou": {n: _iou_or_none(v) for n, v in zip(class_names, scores.iou)},
    }


def _percent(value):
    return ABSENT if math.isnan(value) else f"{100 * value:.1f}"


def _markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def iou_markdown(columns, class_names):
    """Per-class IoU (%) with one column per entry of `columns` ({title: Scores}), then mIoU and pixel accuracy."""
    titles = list(columns)
    rows = [[name] + [_percent(columns[t].iou[i]) for t in titles] for i, name in enumerate(class_names)]
    rows.append(["**mIoU**"] + [f"**{_percent(columns[t].mean_iou)}**" for t in titles])
    rows.append(["pixel accuracy"] + [_percent(columns[t].pixel_accuracy) for t in titles])
    return _markdown_table(["class"] + titles, rows)


def summary_markdown(columns):
    """One row per entry of `columns`: mIoU, pixel accuracy, classes present."""
    rows = [[t, _percent(s.mean_iou), _percent(s.pixel_accuracy), int(s.present.sum())] for t, s in columns.items()]
    return _markdown_table(["fusion", "mIoU", "pixel accuracy", "classes present"], rows)


def speed_markdown(measurements):
    """One row per `speed.Measurement`-like dict: model, resolution, batch, FPS, latency, device."""
    rows = [[m["model"], f"{m['height']}x{m['width']}", m["batch_size"], f"{m['fps']:.2f}",
             f"{m['latency_ms_median']:.1f}", f"{m['latency_ms_p90']:.1f}",
             "on" if m["jit_compile"] else "off", m["precision"], m["device"]] for m in measurements]
    return _markdown_table(
        ["model", "resolution", "batch", "FPS", "latency median (ms)", "latency p90 (ms)", "XLA",
         "precision", "device"], rows)


def iou_csv(columns, class_names):
    """CSV text: class_id, class, then one IoU (fraction, empty if absent) column per entry of `columns`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    titles = list(columns)
    writer.writerow(["class_id", "class"] + titles)
    for i, name in enumerate(class_names):
        writer.writerow([i, name] + ["" if math.isnan(columns[t].iou[i]) else f"{columns[t].iou[i]:.6f}"
                                     for t in titles])
    writer.writerow(["", "mean_iou"] + [f"{columns[t].mean_iou:.6f}" for t in titles])
    writer.writerow(["", "pixel_accuracy"] + [f"{columns[t].pixel_accuracy:.6f}" for t in titles])
    return out.getvalue()


def confusion_csv(matrix, class_names):
    """CSV text of a confusion matrix: rows = labels, columns = predictions, pixel counts."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["label \\ prediction"] + list(class_names))
    for name, row in zip(class_names, matrix):
        writer.writerow([name] + [int(v) for v in row])
    return out.getvalue()
