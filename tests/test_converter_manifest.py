"""The converters' manifest records --strict: a --strict rerun over shards made without it refuses."""

import os

import numpy as np
import pytest
from PIL import Image

from synergyseg.data import cityscapes


def _write_city(root, stem, ids):
    image = np.zeros(ids.shape + (3,), np.uint8)
    for sub, suffix, array in (("leftImg8bit", "_leftImg8bit.png", image),
                               ("gtFine", "_gtFine_labelIds.png", ids)):
        directory = os.path.join(root, sub, "val", "ulm")
        os.makedirs(directory, exist_ok=True)
        Image.fromarray(array).save(os.path.join(directory, stem + suffix))


def test_a_strict_rerun_over_lenient_shards_is_refused_naming_strict(tmp_path):
    root, out = str(tmp_path / "cityscapes"), str(tmp_path / "out")
    ids = np.full((8, 12), 7, np.uint8)
    ids[0] = 40  # an id Cityscapes does not define: stored as 255 without --strict
    _write_city(root, "ulm_000000_000000", ids)
    summary = cityscapes.convert(root, out, splits=("val",), num_shards=1, workers=1, log=None)
    assert summary["val"].unknown_pixels == 12
    with pytest.raises(FileExistsError, match=r"other parameters \(strict: False -> True\)"):
        cityscapes.convert(root, out, splits=("val",), num_shards=1, strict=True, workers=1,
                           log=None)
    # The same parameters resume (nothing left to write).
    assert cityscapes.convert(root, out, splits=("val",), num_shards=1, workers=1,
                              log=None)["val"].images == 1
