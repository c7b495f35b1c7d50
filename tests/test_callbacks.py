"""The training run's own callbacks: validation images in TensorBoard, per-class IoU, NaN stops."""

import glob
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from synergyseg import build_synergyseg, with_fusion
from synergyseg.training.callbacks import PerClassIoU, TerminateOnNaN, ValidationImages, colorize
from tests.reference import tiny_kwargs

COLORS = ((10, 20, 30), (200, 0, 0), (0, 200, 0))


def _image_events(log_dir):
    """{tag: [(step, decoded uint8 images)]} from the TensorBoard event files under `log_dir`."""
    found = {}
    for path in glob.glob(f"{log_dir}/**/events.out.tfevents.*", recursive=True):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                blobs = tf.make_ndarray(value.tensor)[2:]  # [width, height, png, png, ...]
                images = [tf.io.decode_png(b).numpy() for b in blobs]
                found.setdefault(value.tag, []).append((event.step, images))
    return found


def test_colorize_uses_the_palette_and_paints_ignore_black():
    label = np.array([[0, 1], [2, 255]])
    np.testing.assert_array_equal(colorize(label, COLORS), [[COLORS[0], COLORS[1]], [COLORS[2], (0, 0, 0)]])


def test_validation_images_write_image_label_prediction_and_uncertainty(tmp_path):
    model = build_synergyseg(3, **tiny_kwargs())
    scale_model = with_fusion(model, scale_outputs=True)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (2, 24, 32, 3)).astype("float32")
    labels = rng.integers(0, 3, (2, 24, 32))
    callback = ValidationImages(images, labels, COLORS, str(tmp_path), scale_model)
    callback.set_model(model)
    callback.on_epoch_end(0)
    callback.on_train_end()
    events = _image_events(str(tmp_path))
    assert sorted(events) == [f"validation/{n}" for n in ("image", "label", "prediction", "uncertainty")]
    (step, predicted), = events["validation/prediction"]
    assert step == 1 and len(predicted) == 2
    expected = colorize(scale_model.predict(images, verbose=0)["fused"].argmax(-1), COLORS)
    np.testing.assert_array_equal(np.stack(predicted)[..., :3], expected)
    (_, painted), = events["validation/label"]
    np.testing.assert_array_equal(np.stack(painted)[..., :3], colorize(labels, COLORS))


def test_per_class_iou_logs_each_class_under_its_name():
    metric = keras.metrics.MeanIoU(3, ignore_class=255, sparse_y_pred=True, name="mean_iou")
    y_true = np.array([0, 0, 1, 1, 2, 255])
    y_pred = np.array([0, 1, 1, 1, 0, 2])
    metric.update_state(y_true, y_pred)
    callback = PerClassIoU(["road", "traffic sign", "sky"])
    # What the callback reads of a compiled model after fit's validation pass: its metrics.
    callback.set_model(types.SimpleNamespace(name="model", metrics=[metric]))
    logs = {"val_loss": 0.0}
    callback.on_epoch_end(0, logs)
    # road: TP 1, FP 1, FN 1 -> 1/3; traffic sign: TP 2, FP 1 -> 2/3; sky: TP 0 -> 0.
    assert logs["val_iou_road"] == pytest.approx(1 / 3)
    assert logs["val_iou_traffic_sign"] == pytest.approx(2 / 3)
    assert logs["val_iou_sky"] == 0.0


def test_terminate_on_nan_names_the_step_and_what_to_try():
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    callback = TerminateOnNaN()
    callback.set_model(model)
    callback.on_batch_end(3, {"loss": 1.0})
    with pytest.raises(FloatingPointError, match=r"became nan at step 0 \(batch 4\).*clipnorm"):
        callback.on_batch_end(4, {"loss": float("nan")})
