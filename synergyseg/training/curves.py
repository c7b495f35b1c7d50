"""Training curves: a PNG of loss, mean IoU and learning rate per epoch from a CSVLogger file."""

import csv

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from synergyseg.atomic import atomic_output


def read_history(history_csv):
    """CSVLogger rows as {column: [float per epoch]} (empty cells -> NaN)."""
    with open(history_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{history_csv}: no epochs recorded")
    columns = {}
    for row in rows:
        for key, value in row.items():
            columns.setdefault(key, []).append(float(value) if value not in ("", None) else float("nan"))
    return columns


def plot_training_curves(history_csv, png_path):
    """Writes loss, mean IoU and learning rate against epoch to `png_path` (atomically)."""
    history = read_history(history_csv)
    epochs = [int(e) + 1 for e in history.get("epoch", range(len(next(iter(history.values())))))]
    panels = [("loss", ["loss", "val_loss"]), ("mean IoU", ["mean_iou", "val_mean_iou"]),
              ("learning rate", ["learning_rate"])]
    # A Figure on the Agg canvas, not pyplot: no global backend, nothing opens a window.
    fig = Figure(figsize=(4 * len(panels), 3.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels))
    for ax, (title, keys) in zip(axes, panels):
        for key in keys:
            if key in history:
                ax.plot(epochs, history[key], marker=".", label=key)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_output(png_path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
