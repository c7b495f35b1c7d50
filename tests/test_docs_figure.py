"""docs/figure.py, the README picture: image | overlay | uncertainty from a two-scale run."""

import os

import numpy as np
from PIL import Image

import synergyseg
from synergyseg.predict import overlay, uncertainty_image
from reference import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIGURE = os.path.join(ROOT, "docs", "figure.py")


def test_three_panels_are_the_image_its_overlay_and_the_uncertainty(synthetic_run, tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (*synthetic_run.size, 3), dtype=np.uint8)
    source = tmp_path / "scene.png"
    Image.fromarray(image).save(source)
    out = tmp_path / "figure.png"
    assert load_script(FIGURE).main([str(synthetic_run.run_dir), "--image", str(source), "--out", str(out)]) == 0
    picture = np.asarray(Image.open(out))
    h, w = synthetic_run.size
    assert picture.shape == (h, 3 * w, 3)
    # Each panel against the Segmenter's own outputs, computed here apart from the script.
    segmenter = synergyseg.Segmenter(str(synthetic_run.run_dir))
    result = segmenter.predict(image)
    colors = np.asarray(segmenter.overlay(np.zeros_like(image), result.class_map, opacity=1.0))
    np.testing.assert_array_equal(picture[:, :w], image)
    np.testing.assert_array_equal(picture[:, w:2 * w], overlay(image, colors, 0.5))
    gray = uncertainty_image(result.uncertainty)
    assert gray.std() > 0  # a real uncertainty map, not a constant
    np.testing.assert_array_equal(picture[:, 2 * w:], np.repeat(gray[..., None], 3, axis=-1))


def test_a_missing_image_is_named_and_nothing_is_written(synthetic_run, tmp_path, capsys):
    out = tmp_path / "figure.png"
    assert load_script(FIGURE).main([str(synthetic_run.run_dir), "--image", str(tmp_path / "nope.jpg"),
                           "--out", str(out)]) == 1
    assert "nope.jpg" in capsys.readouterr().err and not out.exists()
