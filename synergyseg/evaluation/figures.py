"""Evaluation pictures as PNG files: qualitative grid (paper's Fig. 1 and 3), IoU bars, confusion matrix.

Figures are drawn on `matplotlib.figure.Figure` with the Agg canvas, not pyplot, so nothing
global changes and no display is needed. Every function returns the PNG's (width, height) in
pixels, which depends only on its arguments.
"""

import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image

from synergyseg.atomic import atomic_output
from synergyseg.data.info import colorize

DPI = 100
GRID_WIDTH_PX = 1600
GRID_COLUMNS = ("image", "label", "prediction", "uncertainty (white = unsure)")
LEGEND_COLUMNS = 6
LEGEND_ROW_PX = 22
IOU_CHART_PX = (1200, 500)
CONFUSION_PX = (1000, 1000)


def _save(figure, path, size_px):
    figure.set_size_inches(size_px[0] / DPI, size_px[1] / DPI)
    with atomic_output(path) as tmp:
        FigureCanvasAgg(figure).print_png(tmp)
    return size_px


def grid_size_px(num_images, height, width, num_classes):
    """(width, height) in pixels of `qualitative_grid` for `num_images` images of `height` x `width`."""
    panel_height = round(GRID_WIDTH_PX / len(GRID_COLUMNS) * height / width)
    legend = LEGEND_ROW_PX * (math.ceil(num_classes / LEGEND_COLUMNS) + 1)
    return GRID_WIDTH_PX, num_images * panel_height + legend


def qualitative_grid(path, examples, class_names, colors, ignore_label=255):
    """Writes a grid with one row per example: image, label, prediction, uncertainty mask.

    Args:
        path: PNG file to write.
        examples: dicts with "image" (H', W', 3) RGB [0, 255] (resized to the label's size if it
            differs), "label" and "prediction" (H, W) class ids, "uncertainty" (H, W) in [0, 1] or
            None (a single-scale model), as kept by `ExampleCollector`.
        class_names, colors: the dataset's classes and RGB palette (the legend).
    """
    if not examples:
        raise ValueError("qualitative_grid needs at least one example")
    height, width = examples[0]["label"].shape
    size = grid_size_px(len(examples), height, width, len(class_names))
    figure = Figure(dpi=DPI)
    legend_fraction = LEGEND_ROW_PX * (math.ceil(len(class_names) / LEGEND_COLUMNS) + 1) / size[1]
    rows = len(examples)
    for r, example in enumerate(examples):
        label = example["label"]
        image = np.clip(example["image"], 0, 255).astype(np.uint8)
        if image.shape[:2] != label.shape:
            image = np.asarray(Image.fromarray(image).resize(label.shape[::-1], Image.BILINEAR))
        uncertainty = example.get("uncertainty")
        panels = [image, colorize(label, colors, ignore_label), colorize(example["prediction"], colors, ignore_label),
                  None if uncertainty is None else np.clip(uncertainty, 0, 1)]
        for c, panel in enumerate(panels):
            top = 1 - (r + 1) * (1 - legend_fraction) / rows
            ax = figure.add_axes((c / 4, top, 1 / 4, (1 - legend_fraction) / rows))
            ax.set_axis_off()
            if panel is None:
                ax.text(0.5, 0.5, "single-scale model:\nno uncertainty mask", ha="center", va="center")
            elif panel.ndim == 2:
                ax.imshow(panel, cmap="gray", vmin=0, vmax=1, interpolation="nearest", aspect="auto")
            else:
                ax.imshow(panel, interpolation="nearest", aspect="auto")
            if r == 0:
                ax.text(0.5, 0.98, GRID_COLUMNS[c], transform=ax.transAxes, ha="center", va="top",
                        color="white", fontsize=10, bbox={"facecolor": "black", "alpha": 0.6, "pad": 2})
    handles = [Patch(facecolor=np.asarray(color) / 255, edgecolor="black", label=name)
               for name, color in zip(class_names, colors)]
    figure.legend(handles=handles, loc="lower center", ncol=LEGEND_COLUMNS, fontsize=8, frameon=False,
                  borderaxespad=0.2, handlelength=1.2, columnspacing=1.0)
    return _save(figure, path, size)


def iou_bar_chart(path, iou, class_names, title="per-class IoU"):
    """Writes a bar chart of per-class IoU (in %); absent classes (NaN) are marked "n/a"."""
    iou = np.asarray(iou, np.float64)
    figure = Figure(dpi=DPI)
    ax = figure.add_axes((0.06, 0.3, 0.92, 0.62))
    x = np.arange(len(class_names))
    values = np.nan_to_num(iou * 100, nan=0.0)
    ax.bar(x, values, color="tab:blue")
    for i in np.flatnonzero(np.isnan(iou)):
        ax.text(i, 1, "n/a", ha="center", va="bottom", rotation=90, fontsize=7, color="gray")
    present = ~np.isnan(iou)
    if present.any():
        mean = float(np.mean(iou[present])) * 100
        ax.axhline(mean, color="tab:red", linestyle="--", label=f"mIoU {mean:.1f}")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xticks(x)
    ax.set_xticklabels(class_names, rotation=90, fontsize=max(5, min(9, 500 // max(len(class_names), 1))))
    ax.set_xlim(-0.6, len(class_names) - 0.4)
    ax.set_ylim(0, 100)
    ax.set_ylabel("IoU (%)")
    ax.set_title(title)
    return _save(figure, path, IOU_CHART_PX)


def normalized_confusion(matrix):
    """Row-normalized confusion matrix (each label's row sums to 1); rows with no pixels are NaN."""
    matrix = np.asarray(matrix, np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, matrix / np.maximum(totals, 1), np.nan)


def confusion_figure(path, matrix, class_names, title="normalized confusion matrix (rows = labels)"):
    """Writes the row-normalized confusion matrix as a heat map."""
    figure = Figure(dpi=DPI)
    ax = figure.add_axes((0.2, 0.2, 0.72, 0.72))
    image = ax.imshow(normalized_confusion(matrix), cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ticks = np.arange(len(class_names))
    fontsize = max(4, min(9, 600 // max(len(class_names), 1)))
    ax.set_xticks(ticks)
    ax.set_xticklabels(class_names, rotation=90, fontsize=fontsize)
    ax.set_yticks(ticks)
    ax.set_yticklabels(class_names, fontsize=fontsize)
    ax.set_xlabel("prediction")
    ax.set_ylabel("label")
    ax.set_title(title)
    figure.colorbar(image, ax=ax, fraction=0.04)
    return _save(figure, path, CONFUSION_PX)
