"""The synthetic street set: deterministic, parallel == serial, and it holds the paper's two
failure modes (thin far objects, near objects larger than a small receptive field)."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from synergyseg import data
from synergyseg.data import synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def scenes():
    return [synthetic.render_scene((0, 0, i), 256, 512) for i in range(30)]


def test_render_is_deterministic_by_seed():
    a, b, c = (synthetic.render_scene(s, 64, 128) for s in (5, 5, 6))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert a[0].shape == (64, 128, 3) and a[0].dtype == np.uint8 and a[1].shape == (64, 128)
    assert a[1].max() < data.SYNTHETIC.num_classes


def _object_widths(mask):
    """Widths of the groups of adjacent columns that hold `mask`: one per (unoccluded) object."""
    edges = np.diff(np.pad(mask.any(0).astype(np.int8), 1))
    return np.nonzero(edges == -1)[0] - np.nonzero(edges == 1)[0]


def test_thin_far_objects_exist_and_vanish_at_half_resolution(scenes):
    poles = np.concatenate([_object_widths(label == synthetic.POLE) for _, label in scenes])
    people = np.concatenate([_object_widths(label == synthetic.PERSON) for _, label in scenes])
    assert len(poles) > 100 and np.mean(poles <= 4) > 0.5, "most poles are 2-4 px wide"
    assert np.mean(poles >= 2) > 0.95, "poles are wide enough for the full scale to learn"
    assert np.sum(people <= 3) > 10, "distant people are 1-3 px wide"
    # At half resolution (2x2 blocks) a 2-px pole that straddles blocks is half of each, so a
    # large share of pole pixels no longer dominates any block of the low-scale input.
    lost = []
    for _, label in scenes:
        pole = (label == synthetic.POLE).astype(np.float32)
        dominant = pole.reshape(128, 2, 256, 2).mean(axis=(1, 3)) > 0.5
        lost.append(1 - 4 * dominant.sum() / max(pole.sum(), 1))
    assert np.mean(lost) > 0.3


def test_people_and_signs_are_common_and_large_enough_to_learn(scenes):
    # Version 1 hung signs at the poles' tops (out of view on near poles) and kept people far:
    # no model learned either class (IoU 0.0). Now near ones exist in most scenes, far ones stay.
    labels = np.stack([label for _, label in scenes])
    share = np.bincount(labels.ravel(), minlength=data.SYNTHETIC.num_classes) / labels.size
    assert share[synthetic.PERSON] > 0.015 and share[synthetic.SIGN] > 0.003
    people = [_object_widths(label == synthetic.PERSON) for label in labels]
    signs = [_object_widths(label == synthetic.SIGN) for label in labels]
    assert np.mean([np.any(w >= 12) for w in people]) > 0.5, "a near person in most scenes"
    assert np.mean([np.any(w >= 8) for w in signs]) > 0.5, "a readable sign in most scenes"
    assert np.sum(np.concatenate(signs) <= 4) > 10, "and far signs of a few pixels"


def test_near_trucks_are_large_and_share_the_facade_palette(scenes):
    heights, widths = [], []
    for _, label in scenes:
        rows, cols = np.nonzero(label == synthetic.TRUCK)
        if rows.size > 5000:
            heights.append(np.ptp(rows) / 256)
            widths.append(np.ptp(cols) / 512)
    assert len(heights) >= 10
    assert np.median(heights) > 0.45 and np.median(widths) > 0.4
    # Truck containers and facades take their colour from one palette: in every scene, the
    # container's median colour is a palette colour, like the facades'.
    palette = synthetic._FACADE_PALETTE
    for image, label in scenes:
        truck = image[label == synthetic.TRUCK].astype(np.float32)
        truck = truck[truck.mean(1) > 90]  # container panels, not the wheels and chassis
        if len(truck) > 5000:
            distance = np.abs(palette - np.median(truck, 0)).max(1).min()
            assert distance < 30


def test_trucks_and_walls_share_one_box_geometry():
    # The same box drawn as a wall and as a truck covers the same rows and columns: size, bottom
    # row and position never tell the two apart, only the truck's wheels and cab do.
    for seed in range(5):
        box = synthetic._near_box(np.random.default_rng(seed), 256, 512, 100.0, 256.0)
        extents = []
        for draw, cls in ((synthetic._wall, synthetic.BUILDING), (synthetic._truck, synthetic.TRUCK)):
            canvas = synthetic._Canvas(256, 512)
            draw(canvas, np.random.default_rng(seed), *box)
            rows, cols = np.nonzero(canvas.label == cls)
            extents.append(np.array([rows.min(), rows.max(), cols.min(), cols.max()]))
        np.testing.assert_allclose(extents[0], extents[1], atol=1)
        rows_top, rows_bottom = extents[0][:2]
        assert rows_bottom >= 100 and rows_bottom - rows_top + 1 >= min(0.45 * 256, rows_bottom)


def test_objects_shrink_toward_the_horizon():
    # Pinhole camera: an object touching the ground dy rows below the horizon is drawn at
    # dy / 1.5 pixels per metre, so a person 10x nearer to the horizon is 10x smaller.
    sizes = []
    for dy in (6.0, 60.0):
        canvas = synthetic._Canvas(256, 512)
        synthetic._person(canvas, np.random.default_rng(0), 100 + dy, 256, dy / 1.5)
        rows, cols = np.nonzero(canvas.label == synthetic.PERSON)
        sizes.append((np.ptp(rows) + 1, np.ptp(cols) + 1))
    (far_h, far_w), (near_h, near_w) = sizes
    assert far_w <= 3 and near_w >= 18
    assert 8 <= near_h / far_h <= 12


def test_generate_parallel_equals_serial_and_summarises(tmp_path):
    kwargs = dict(num_train=6, num_val=2, height=32, width=64, seed=3, num_shards=3, log=None)
    serial = synthetic.generate(str(tmp_path / "a"), workers=1, **kwargs)
    synthetic.generate(str(tmp_path / "b"), workers=2, **kwargs)
    names = sorted(f for f in os.listdir(tmp_path / "a") if f.endswith(".tfrecord"))
    assert names == ["train-00000-of-00003.tfrecord", "train-00001-of-00003.tfrecord",
                     "train-00002-of-00003.tfrecord", "val-00000-of-00001.tfrecord"]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert serial["train"].images == 6 and serial["val"].images == 2
    assert serial["train"].pixel_counts.sum() == 6 * 32 * 64
    image, label = next(iter(data.eval_dataset(str(tmp_path / "a" / "val-*.tfrecord"))))
    assert image.shape == (1, 32, 64, 3) and label.shape == (1, 32, 64)


def test_command_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "datasets", "synthetic.py"), "--out", str(tmp_path),
         "--num-train", "2", "--num-val", "1", "--height", "16", "--width", "32",
         "--workers", "1"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "train: 2 images" in result.stdout and "ignored (255)" in result.stdout
    assert os.path.exists(tmp_path / "train-00000-of-00002.tfrecord")


def test_a_resume_with_other_parameters_is_refused(tmp_path):
    kwargs = dict(num_train=2, num_val=1, height=16, width=32, num_shards=1, workers=1, log=None)
    synthetic.generate(str(tmp_path), **kwargs)
    synthetic.generate(str(tmp_path), **kwargs)  # the same parameters: resumes (nothing to do)
    with pytest.raises(FileExistsError, match=r"other parameters \(height: 16 -> 32\)"):
        synthetic.generate(str(tmp_path), **dict(kwargs, height=32))
    with pytest.raises(FileExistsError, match=r"items: 2 -> 3"):
        synthetic.generate(str(tmp_path), **dict(kwargs, num_train=3))


def _descendants(pid):
    children = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            children += [int(c) for c in f.read().split()]
    return children + [d for c in children for d in _descendants(c)]


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_converter_leaves_no_live_worker(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    process = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "datasets", "synthetic.py"), "--out", str(tmp_path),
         "--num-train", "400", "--num-val", "1", "--height", "64", "--width", "128",
         "--num-shards", "4", "--workers", "2"], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    workers = []
    deadline = time.time() + 120
    # Kill once the workers are writing shards (a temporary shard file exists).
    while time.time() < deadline and not any(".tmp-" in f for f in os.listdir(tmp_path)):
        workers = _descendants(process.pid) or workers
        time.sleep(0.2)
    workers = _descendants(process.pid) or workers
    assert len(workers) >= 2, "the converter started no worker processes"
    process.kill()
    process.wait(timeout=30)
    deadline = time.time() + 30
    while time.time() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.2)
    assert not [p for p in workers if _alive(p)]
