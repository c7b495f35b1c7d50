"""Predict: a run trained by train.py's code path segments pictures from every saved form of the model.

The session's tiny run (conftest.py's `synthetic_run`: trained through
`synergyseg.training.run.train` on the synthetic scenes) and its export (`synthetic_export`:
SavedModel and TFLite among others) are loaded in fresh processes with only `import synergyseg`,
and each form is compared with evaluate.py's prediction path (`synergyseg.evaluation.Predictor`)
on the validation scenes.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import synergyseg
from synergyseg.data import CITYSCAPES, CITYSCAPES_TRAIN_ID_TO_ID, SYNTHETIC, eval_dataset
from synergyseg.evaluation import Predictor
from synergyseg.export.metadata import METADATA_NAME, metadata, write_metadata
from synergyseg.predict.cli import main as cli_main
from synergyseg.run_folder import load_model
from tests.reference import call

cv2 = pytest.importorskip("cv2")  # the [video] extra, part of [test]

HEIGHT, WIDTH = 48, 96  # conftest.SYNTHETIC_RUN_SIZE: the scenes' size, also the TFLite input size
# The session run's tiny model (conftest.py), for the models these tests build themselves.
TINY = dict(backbone="resnet18", backbone_width=8, head_filters=16, low_level_filters=8)
# Issue 6's bar for full-integer int8: Keras's class on at least 97% of pixels.
INT8_MIN_AGREEMENT = 0.97
# float32 TFLite computes the same graph with other kernels (|dp| ~1e-6): only exact ties may flip.
TFLITE_FLOAT32_MIN_AGREEMENT = 0.999


@pytest.fixture(scope="module")
def data_dir(synthetic_run):
    """The session's synthetic set: 16 training and 4 validation scenes of HEIGHT x WIDTH."""
    assert synthetic_run.size == (HEIGHT, WIDTH)
    return synthetic_run.data_dir


@pytest.fixture(scope="module")
def run_dir(synthetic_run):
    """A run folder written by the main job's code path (config.json, best.keras, final.keras);
    read-only (shared by the session)."""
    return synthetic_run.run_dir


@pytest.fixture(scope="module")
def exported(synthetic_export):
    """The run's SavedModel and TFLite files (float32, int8 calibrated on 8 training scenes)."""
    return synthetic_export


@pytest.fixture(scope="module")
def val_images(data_dir):
    """The validation scenes as uint8 (N, H, W, 3)."""
    return np.concatenate([tf.cast(image, tf.uint8).numpy()
                           for image, _ in eval_dataset(str(data_dir / "val-*"))])


@pytest.fixture(scope="module")
def model(run_dir):
    return load_model(run_dir)


@pytest.fixture(scope="module")
def predictor(model):
    """evaluate.py's prediction path (its Predictor, no flip): one instance, traced once for all sizes."""
    return Predictor(model)


@pytest.fixture(scope="module")
def segmenter(model):
    """A Segmenter of the run's loaded model (traced once, shared by the tests that only read it)."""
    return synergyseg.Segmenter(model)


def _model_class_map(model, images):
    """The Keras model's own class map, called directly (no Predictor, no Segmenter)."""
    return call(model, np.asarray(images, "float32")).argmax(-1)


@pytest.fixture(scope="module")
def reference(model, val_images):
    """The model's own labels and uncertainty output for the validation scenes, called directly:
    independent of the Predictor and Segmenter code that every form below goes through."""
    outputs = call(synergyseg.with_fusion(model, scale_outputs=True), val_images.astype("float32"))
    return outputs["fused"].argmax(-1), outputs["uncertainty"][..., 0]


FRESH_PROCESS_SCRIPT = r"""
import json, sys
import numpy as np
import synergyseg
images = np.load(sys.argv[1])["images"]
for form, path in json.loads(sys.argv[2]):
    segmenter = synergyseg.Segmenter(path)
    results = segmenter.predict(images)
    np.savez(f"{form}.npz", class_map=np.stack([r.class_map for r in results]),
             uncertainty=np.stack([r.uncertainty for r in results]))
    info = {"form": segmenter.form, "class_names": segmenter.class_names, "palette": segmenter.palette}
    if path.endswith(".keras"):
        # The issue's first complaint: a plain load_model (compile=True) after `import synergyseg`.
        import keras
        info["plain_load_model"] = type(keras.models.load_model(path)).__name__
    print(json.dumps({form: info}))
"""

FORMS = {
    "run_folder": lambda run, exported: str(run),
    "keras_file": lambda run, exported: str(run / "best.keras"),
    "saved_model": lambda run, exported: exported["saved_model"],
    "tflite_float32": lambda run, exported: exported["tflite_float32"],
    "tflite_int8": lambda run, exported: exported["tflite_int8"],
}
FORM_KINDS = {"run_folder": "keras", "keras_file": "keras", "saved_model": "saved_model",
              "tflite_float32": "tflite", "tflite_int8": "tflite"}
# Two fresh processes, at once, each with only `import synergyseg` before its first form: one for
# the run folder's Keras file, one for the export folder's files. A process's later forms need
# nothing its first did not already load: the run folder is read through its best.keras (the
# keras_file form's very file, loaded first so that its plain load_model runs in the fresh
# process); the SavedModel and TFLite runners share no state (tf.saved_model.load, a LiteRT
# interpreter per file). Each process costs a TensorFlow import (~7 CPU-s), which one process per
# form paid five times.
FRESH_PROCESSES = [("keras_file", "run_folder"), ("saved_model", "tflite_float32", "tflite_int8")]
assert sorted(f for forms in FRESH_PROCESSES for f in forms) == sorted(FORMS)


def test_every_form_loads_in_a_fresh_process_and_matches_evaluate(
        run_dir, exported, val_images, reference, tmp_path):
    np.savez(tmp_path / "in.npz", images=val_images)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    processes = []
    for i, forms in enumerate(FRESH_PROCESSES):
        folder = tmp_path / str(i)
        folder.mkdir()
        paths = json.dumps([(form, FORMS[form](run_dir, exported)) for form in forms])
        with open(folder / "stdout", "w") as stdout, open(folder / "stderr", "w") as stderr:
            processes.append(subprocess.Popen(
                [sys.executable, "-c", FRESH_PROCESS_SCRIPT, str(tmp_path / "in.npz"), paths],
                stdout=stdout, stderr=stderr, text=True, env=env, cwd=folder))
    try:
        returncodes = [process.wait(timeout=600) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    infos, outputs = {}, {}
    for i, (forms, returncode) in enumerate(zip(FRESH_PROCESSES, returncodes)):
        folder = tmp_path / str(i)
        assert returncode == 0, (forms, (folder / "stderr").read_text()[-3000:])
        for line in (folder / "stdout").read_text().strip().splitlines()[-len(forms):]:
            infos.update(json.loads(line))
        for form in forms:
            outputs[form] = np.load(folder / f"{form}.npz")
    assert sorted(infos) == sorted(FORMS)
    labels, uncertainty = reference
    for form, info in infos.items():
        out = outputs[form]
        assert info["form"] == FORM_KINDS[form]
        # Class names and colours travel with every form: no flag needed to colour the result.
        assert info["class_names"] == list(SYNTHETIC.class_names), form
        assert info["palette"] == [list(c) for c in SYNTHETIC.colors], form
        assert out["class_map"].shape == labels.shape and out["class_map"].dtype == np.uint8, form
        agreement = (out["class_map"] == labels).mean()
        if form == "tflite_int8":
            # A constant map cannot pass: the reference's largest class is far below 97% of pixels.
            shares = np.bincount(labels.ravel(), minlength=SYNTHETIC.num_classes) / labels.size
            assert shares.max() < 0.8 and (shares > 0.05).sum() >= 3, shares
            assert agreement >= INT8_MIN_AGREEMENT, agreement
            continue
        if form == "tflite_float32":
            assert agreement >= TFLITE_FLOAT32_MIN_AGREEMENT, agreement
        else:
            np.testing.assert_array_equal(out["class_map"], labels, err_msg=form)
        np.testing.assert_allclose(out["uncertainty"], uncertainty, atol=1e-4, err_msg=form)
        if form == "keras_file":
            assert info["plain_load_model"] == "SynergySeg"


def test_predict_takes_paths_pil_arrays_and_batches_of_mixed_sizes(model, segmenter, val_images, tmp_path):
    image = val_images[0]
    Image.fromarray(image).save(tmp_path / "scene.png")
    expected = _model_class_map(model, image[None])[0]
    for picture in (image, image.astype(np.float32), Image.fromarray(image), tmp_path / "scene.png",
                    str(tmp_path / "scene.png")):
        np.testing.assert_array_equal(segmenter.predict(picture).class_map, expected)
    small = val_images[1, :37, :53]
    gray = val_images[2, ..., 0]
    results = segmenter.predict([image, small, gray], probabilities=True)
    assert [r.class_map.shape for r in results] == [(HEIGHT, WIDTH), (37, 53), (HEIGHT, WIDTH)]
    for picture, result in zip([image, small, np.repeat(gray[..., None], 3, -1)], results):
        np.testing.assert_array_equal(result.class_map, _model_class_map(model, picture[None])[0])
        assert result.probabilities.shape == picture.shape[:2] + (SYNTHETIC.num_classes,)
        np.testing.assert_array_equal(result.class_map, result.probabilities.argmax(-1))


def test_flip_and_resize_factor_match_evaluate(model, segmenter, predictor, val_images, data_dir):
    # Flip: the mean of the model's probabilities on the image and on its mirror, mirrored back,
    # computed here from the model's own calls.
    x = val_images.astype("float32")
    flipped = (call(model, x) + call(model, x[:, :, ::-1])[:, :, ::-1]).argmax(-1)
    results = segmenter.predict(val_images, flip=True)
    # A different summation order may flip an exact tie; anything beyond a stray pixel is a bug.
    assert (np.stack([r.class_map for r in results]) == flipped).mean() > 0.999
    # evaluate.py --resize-factor 0.5: the pipeline resizes the image, the Predictor resizes back.
    halved = [predictor(image, label.shape[1:3])["model"]
              for image, label in eval_dataset(str(data_dir / "val-*"), resize_factor=0.5)]
    results = segmenter.predict(val_images, resize_factor=0.5)
    np.testing.assert_array_equal(np.stack([r.class_map for r in results]), np.concatenate(halved))
    with pytest.raises(ValueError, match="resize_factor"):
        segmenter.predict(val_images[0], resize_factor=0)


def test_gated_mode_with_no_tiles_is_the_low_scale_alone(model, val_images, exported):
    # Gating 0% of the tiles leaves U(S_lo) everywhere: the "low" fusion of the same weights.
    low = _model_class_map(synergyseg.with_fusion(model, "low"), val_images)
    results = synergyseg.Segmenter(model, gated=0.0).predict(val_images)
    assert (np.stack([r.class_map for r in results]) == low).mean() > 0.999
    assert results[0].uncertainty.shape == (HEIGHT, WIDTH)
    with pytest.raises(ValueError, match="gated inference needs the Keras model"):
        synergyseg.Segmenter(exported["saved_model"], gated=0.25)


def test_tflite_runs_any_picture_size_at_its_own(exported, val_images):
    segmenter = synergyseg.Segmenter(exported["tflite_float32"])
    assert segmenter.input_size == (HEIGHT, WIDTH)
    result = segmenter.predict(val_images[0, :40, :90])
    assert result.class_map.shape == (40, 90) and result.uncertainty.shape == (40, 90)
    with pytest.raises(ValueError, match=rf"model_float32\.tflite.*fixed size {HEIGHT}x{WIDTH}"):
        segmenter.predict(val_images[0], resize_factor=0.5)


def test_class_names_from_the_run_config_else_generic(run_dir, tmp_path):
    # A model saved without names (as before SynergySeg carried them): its run's dataset names them.
    bare = synergyseg.build_synergyseg(SYNTHETIC.num_classes, backbone="resnet18", backbone_width=8,
                                       head_filters=16, low_level_filters=8)
    (tmp_path / "run").mkdir()
    bare.save(tmp_path / "run" / "best.keras")
    (tmp_path / "run" / "config.json").write_text((run_dir / "config.json").read_text())
    named = synergyseg.Segmenter(tmp_path / "run")
    assert named.class_names == list(SYNTHETIC.class_names)
    assert named.palette == [list(c) for c in SYNTHETIC.colors]
    bare.save(tmp_path / "bare.keras")
    generic = synergyseg.Segmenter(tmp_path / "bare.keras")
    assert generic.class_names[:2] == ["class_0", "class_1"]
    assert len({tuple(c) for c in generic.palette}) == SYNTHETIC.num_classes


# --- the command line -------------------------------------------------------------------------

def _run_cli(*args):
    return cli_main([str(a) for a in args] + ["--no-progress"])


def _read(path):
    with Image.open(path) as image:
        return np.asarray(image)


@pytest.fixture(scope="module")
def image_folder(val_images, tmp_path_factory):
    """PNG and JPEG images of different sizes (one gray, one in a sub-folder) and a stray text file."""
    folder = tmp_path_factory.mktemp("photos")
    (folder / "more").mkdir()
    Image.fromarray(val_images[0]).save(folder / "scene.png")
    Image.fromarray(val_images[1, :40, :77]).save(folder / "crop.jpg", quality=95)
    Image.fromarray(val_images[2, :, :, 1]).save(folder / "gray.png")
    Image.fromarray(val_images[3, :45, :81]).save(folder / "more" / "small.jpeg")
    (folder / "notes.txt").write_text("not a picture; a folder's other files are skipped")
    return folder


IMAGES = {"scene": (HEIGHT, WIDTH), "crop": (40, 77), "gray": (HEIGHT, WIDTH),
          os.path.join("more", "small"): (45, 81)}


@pytest.fixture(scope="module")
def quick_model(exported):
    """The run's float32 TFLite file, for the command-line tests whose subject is the files rather
    than the model: it loads in milliseconds, where each command spent seconds loading the run
    folder's Keras model (and tracing it, when it predicted)."""
    return exported["tflite_float32"]


def test_cli_writes_one_output_set_per_image_at_its_size(run_dir, segmenter, image_folder, tmp_path,
                                                         capsys):
    out = tmp_path / "out"
    assert _run_cli(run_dir, image_folder, "--out", out, "--opacity", "0.25") == 0
    written = sorted(os.path.relpath(os.path.join(r, f), out)
                     for r, _, files in os.walk(out) for f in files)
    assert written == sorted(f"{name}_{kind}.png" for name in IMAGES
                             for kind in ("labels", "color", "overlay", "uncertainty"))
    palette = np.array(SYNTHETIC.colors, np.uint8)
    for name, size in IMAGES.items():
        source = next(image_folder.glob(name + ".*"))
        image = np.asarray(Image.open(source).convert("RGB"))
        labels = _read(out / f"{name}_labels.png")
        assert labels.shape == size and labels.dtype == np.uint8
        np.testing.assert_array_equal(labels, segmenter.predict(source).class_map)
        np.testing.assert_array_equal(_read(out / f"{name}_color.png"), palette[labels])
        blend = np.round(0.75 * image.astype(np.float32) + 0.25 * palette[labels]).astype(np.uint8)
        assert np.abs(_read(out / f"{name}_overlay.png").astype(int) - blend).max() <= 1
        assert _read(out / f"{name}_uncertainty.png").shape == size
    assert "4 image(s)" in capsys.readouterr().out


def test_cli_keeps_existing_outputs_unless_overwrite(quick_model, image_folder, tmp_path, capsys):
    model = quick_model
    out = tmp_path / "out"
    assert _run_cli(model, image_folder / "scene.png", "--out", out) == 0
    target = out / "scene_color.png"
    target.write_bytes(b"user's file")
    (out / "scene_labels.png").unlink()
    assert _run_cli(model, image_folder / "scene.png", "--out", out) == 0
    assert target.read_bytes() == b"user's file"  # kept
    assert (out / "scene_labels.png").is_file()  # the missing one is written again
    assert _run_cli(model, image_folder / "scene.png", "--out", out) == 0
    assert "1 input(s) skipped" in capsys.readouterr().out
    assert _run_cli(model, image_folder / "scene.png", "--out", out, "--overwrite") == 0
    assert _read(target).shape == (HEIGHT, WIDTH, 3)


def _write_video(path, frames, fps=10):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                             (frames[0].shape[1], frames[0].shape[0]))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def _read_video(path):
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return np.stack(frames), fps


def test_cli_overlays_a_video_frame_for_frame(run_dir, segmenter, val_images, tmp_path, capsys):
    frames = [np.roll(val_images[i % 4], 8 * i, axis=1) for i in range(8)]
    _write_video(tmp_path / "drive.mp4", frames)
    decoded, _ = _read_video(tmp_path / "drive.mp4")
    out = tmp_path / "out"
    assert _run_cli(run_dir, tmp_path / "drive.mp4", "--out", out, "--batch-size", "3") == 0
    assert os.listdir(out) == ["drive_overlay.mp4"]
    overlaid, fps = _read_video(out / "drive_overlay.mp4")
    assert overlaid.shape == (8, HEIGHT, WIDTH, 3) and fps == pytest.approx(10)
    # Each frame is the overlay of that frame's prediction (up to the codec's loss).
    expected = np.stack([segmenter.overlay(f, segmenter.predict(f).class_map) for f in decoded])
    error = np.abs(overlaid.astype(np.float32) - expected).mean(axis=(1, 2, 3))
    assert error.max() < 6, error
    # Against a frame shifted by one: the frames really are in order.
    assert np.abs(overlaid[1:].astype(np.float32) - expected[:-1]).mean() > 2 * error.mean()
    printed = capsys.readouterr().out
    assert f"drive.mp4: 8 frames {WIDTH}x{HEIGHT}" in printed and "FPS" in printed


def test_cityscapes_ids_are_the_official_label_ids(tmp_path, val_images):
    keras.utils.set_random_seed(0)
    model = synergyseg.build_synergyseg(19, class_names=CITYSCAPES.class_names,
                                        palette=CITYSCAPES.colors, **TINY)
    model.save(tmp_path / "cityscapes.keras")
    Image.fromarray(val_images[0]).save(tmp_path / "frame.png")
    out = tmp_path / "out"
    assert _run_cli(tmp_path / "cityscapes.keras", tmp_path / "frame.png", "--out", out,
                    "--cityscapes-ids") == 0
    train_ids = synergyseg.Segmenter(model).predict(val_images[0]).class_map  # the model before saving
    np.testing.assert_array_equal(_read(out / "frame_labels.png"), CITYSCAPES_TRAIN_ID_TO_ID[train_ids])


# --- bad input: a clear error naming the file, a non-zero exit, nothing half-written ---------

def _files(folder):
    return sorted(os.path.relpath(os.path.join(r, f), folder)
                  for r, _, files in os.walk(folder) for f in files) if folder.exists() else []


def _fails(capsys, *args, names):
    assert _run_cli(*args) != 0
    err = capsys.readouterr().err
    assert names in err, err
    return err


def test_missing_model_and_missing_input(quick_model, image_folder, tmp_path, capsys):
    out = tmp_path / "out"
    _fails(capsys, tmp_path / "nowhere.keras", image_folder, "--out", out, names="nowhere.keras")
    _fails(capsys, tmp_path, image_folder, "--out", out, names=str(tmp_path))  # no model in it
    _fails(capsys, quick_model, tmp_path / "missing.png", "--out", out, names="missing.png")
    assert not out.exists()


def test_files_that_are_not_images_or_videos(quick_model, image_folder, tmp_path, capsys):
    out = tmp_path / "out"
    _fails(capsys, quick_model, image_folder / "notes.txt", "--out", out, names="notes.txt")
    fake = tmp_path / "fake.png"
    fake.write_text("text with an image's name")
    # The bad file is found before any prediction: nothing is written for the good one either.
    _fails(capsys, quick_model, image_folder / "scene.png", fake, "--out", out, names="fake.png")
    assert _files(out) == []


def test_truncated_images(quick_model, image_folder, tmp_path, capsys):
    out = tmp_path / "out"
    png = (image_folder / "scene.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(png[: len(png) // 2])
    _fails(capsys, quick_model, image_folder / "scene.png", tmp_path / "cut.png", "--out", out,
           names="cut.png")
    assert _files(out) == []
    # A JPEG's header checks out; it fails when decoded, after the images before it are done.
    jpeg = (image_folder / "crop.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    _fails(capsys, quick_model, image_folder / "scene.png", tmp_path / "cut.jpg", "--out", out,
           names="cut.jpg")
    assert not [f for f in _files(out) if f.startswith("cut") or f.startswith(".")]
    for name in _files(out):  # whatever was written is whole
        _read(out / name)


def test_unreadable_video(quick_model, image_folder, val_images, tmp_path, capsys):
    out = tmp_path / "out"
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    _fails(capsys, quick_model, image_folder / "scene.png", tmp_path / "broken.mp4", "--out", out,
           names="broken.mp4")
    _write_video(tmp_path / "good.mp4", [val_images[0]] * 8)
    content = (tmp_path / "good.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(content[: len(content) // 3])
    _fails(capsys, quick_model, tmp_path / "cut.mp4", "--out", out, names="cut.mp4")
    assert _files(out) == []


def test_tflite_file_and_metadata_of_different_class_counts(exported, image_folder, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "model.tflite").write_bytes(open(exported["tflite_float32"], "rb").read())
    cityscapes = synergyseg.build_synergyseg(19, class_names=CITYSCAPES.class_names,
                                             palette=CITYSCAPES.colors, backbone="resnet18",
                                             backbone_width=8, head_filters=16, low_level_filters=8)
    write_metadata(folder / METADATA_NAME, metadata(cityscapes))
    out = tmp_path / "out"
    err = _fails(capsys, folder / "model.tflite", image_folder, "--out", out, names="model.tflite")
    assert METADATA_NAME in err and "10 classes" in err and "19" in err
    assert not out.exists()
    with pytest.raises(ValueError, match="another export"):
        synergyseg.Segmenter(folder / "model.tflite")


def test_output_folder_that_is_a_file(quick_model, image_folder, tmp_path, capsys):
    out = tmp_path / "out.png"
    out.write_bytes(b"a file")
    _fails(capsys, quick_model, image_folder, "--out", out, names="out.png")
    assert out.read_bytes() == b"a file"


def test_a_rerun_removes_the_video_staging_a_killed_predict_left(quick_model, tmp_path):
    """A predict killed while writing a video leaves `.NAME_overlay.mp4.partial-PID-*/`; the rerun
    into the same --out removes it (a live predict's staging stays)."""
    frames = [np.random.default_rng(i).integers(0, 256, (32, 64, 3), np.uint8) for i in range(2)]
    _write_video(tmp_path / "drive.mp4", frames)
    out = tmp_path / "out"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = out / f".drive_overlay.mp4.partial-{dead.pid}-ab12cd34"
    stale.mkdir(parents=True)
    (stale / "drive_overlay.mp4").write_bytes(b"half a video")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        live = out / f".drive_overlay.mp4.partial-{sleeper.pid}-ef56gh78"
        live.mkdir()
        assert _run_cli(quick_model, tmp_path / "drive.mp4", "--out", out) == 0
        assert sorted(os.listdir(out)) == sorted([live.name, "drive_overlay.mp4"])
    finally:
        sleeper.kill()
        sleeper.wait()
