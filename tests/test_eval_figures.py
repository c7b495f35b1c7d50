"""The evaluation figures are valid PNGs of the documented size, drawn with the dataset's palette."""

import numpy as np
import pytest
from PIL import Image

from synergyseg.data import SYNTHETIC
from synergyseg.evaluation import figures

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png(path, size):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.size == size
        return np.asarray(image.convert("RGB"))


def _examples(count, rng, uncertainty=True):
    return [{"image": rng.uniform(0, 255, (16, 32, 3)),  # half the label size, as at resize 0.5
             "label": rng.integers(0, 10, (32, 64)), "prediction": rng.integers(0, 10, (32, 64)),
             "uncertainty": rng.uniform(0, 1, (32, 64)) if uncertainty else None} for _ in range(count)]


def test_qualitative_grid_size_and_palette(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "grid.png"
    size = figures.qualitative_grid(path, _examples(3, rng), SYNTHETIC.class_names, SYNTHETIC.colors)
    # 4 panels of 400 px across a 1600 px row; 32x64 images -> rows of 200 px; 10 classes -> legend
    # of 2 rows + 1 margin row of 22 px.
    assert size == (1600, 3 * 200 + 3 * 22)
    pixels = _check_png(path, size)
    # The label panel (second column) is painted only in the dataset's colours.
    panel = pixels[30:190, 410:790].reshape(-1, 3)
    palette = {tuple(c) for c in SYNTHETIC.colors}
    assert {tuple(int(v) for v in p) for p in panel[::97]} <= palette


def _panel_cells(pixels, row, column, shape, row_px=200, column_px=400):
    """The figure's colour at the centre of each label pixel of panel (row, column)."""
    h, w = shape
    ys = row * row_px + ((np.arange(h) + 0.5) * row_px / h).astype(int)
    xs = column * column_px + ((np.arange(w) + 0.5) * column_px / w).astype(int)
    return pixels[ys[:, None], xs[None, :]]


def test_qualitative_grid_panels_show_the_label_and_prediction_in_the_palette(tmp_path):
    rng = np.random.default_rng(2)
    examples = _examples(3, rng)
    examples[1]["label"][:4, :8] = 255  # ignored pixels are drawn black
    size = figures.qualitative_grid(tmp_path / "grid.png", examples, SYNTHETIC.class_names,
                                    SYNTHETIC.colors)
    pixels = _check_png(tmp_path / "grid.png", size)
    colors = np.concatenate([np.asarray(SYNTHETIC.colors, np.uint8), np.zeros((246, 3), np.uint8)])
    # Rows 1 and 2 (row 0 carries the column titles): label in column 1, prediction in column 2,
    # each label pixel a 6.25 px square of its class's colour.
    for row in (1, 2):
        for column, key in ((1, "label"), (2, "prediction")):
            expected = colors[examples[row][key]]
            np.testing.assert_array_equal(
                _panel_cells(pixels, row, column, expected.shape[:2]), expected, err_msg=(row, key))
        # The uncertainty mask in grey levels (column 3), to the grey colormap's 256 steps and
        # 8-bit rounding (measured at most 1.8 / 255).
        grey = _panel_cells(pixels, row, 3, (32, 64)).astype(float)
        assert (grey == grey[..., :1]).all()
        np.testing.assert_allclose(grey[..., 0] / 255, examples[row]["uncertainty"], atol=2.5 / 255)


def test_single_scale_grid_without_uncertainty(tmp_path):
    rng = np.random.default_rng(1)
    size = figures.qualitative_grid(tmp_path / "g.png", _examples(1, rng, uncertainty=False),
                                    SYNTHETIC.class_names, SYNTHETIC.colors)
    _check_png(tmp_path / "g.png", size)


def test_iou_chart_and_confusion_matrix(tmp_path):
    iou = np.linspace(0, 1, 10)
    iou[4] = np.nan
    assert figures.iou_bar_chart(tmp_path / "iou.png", iou, SYNTHETIC.class_names) == (1200, 500)
    _check_png(tmp_path / "iou.png", (1200, 500))
    matrix = np.arange(100).reshape(10, 10)
    matrix[3] = 0
    assert figures.confusion_figure(tmp_path / "cm.png", matrix, SYNTHETIC.class_names) == (1000, 1000)
    _check_png(tmp_path / "cm.png", (1000, 1000))


def test_colorize_and_normalized_confusion():
    colors = ((10, 20, 30), (40, 50, 60))
    rgb = figures.colorize(np.array([[0, 1, 255]]), colors)
    np.testing.assert_array_equal(rgb[0], [[10, 20, 30], [40, 50, 60], [0, 0, 0]])
    normalized = figures.normalized_confusion(np.array([[3, 1], [0, 0]]))
    np.testing.assert_allclose(normalized[0], [0.75, 0.25])
    assert np.isnan(normalized[1]).all()


def test_grid_needs_examples(tmp_path):
    with pytest.raises(ValueError, match="at least one example"):
        figures.qualitative_grid(tmp_path / "x.png", [], SYNTHETIC.class_names, SYNTHETIC.colors)
