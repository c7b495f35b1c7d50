"""The model contract: a SynergySeg says what it is, loads in a fresh process after `import synergyseg`,
old `.keras` files keep loading, and `compile()` with no arguments is the paper's recipe."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import synergyseg
from synergyseg import run_folder
from synergyseg.models import fusion, names, resnet
from synergyseg.training.config import preset
from synergyseg.training.run import build_model

DATA = os.path.join(os.path.dirname(__file__), "data")
# Width 16: width 8 trips a oneDNN crash in training (README, known issues).
TINY = dict(backbone="resnet18", backbone_width=16, head_filters=16, low_level_filters=8)


def test_name_tuples_are_what_the_modules_implement():
    assert set(resnet.RESNETS) <= set(names.BACKBONES)
    for name in names.FUSIONS:
        layer = fusion.make_fusion(name)
        layer.build([(1, 4, 6, 3), (1, 8, 12, 3)])
        assert fusion.fusion_name(layer) == name
        assert (name in names.WEIGHTLESS_FUSIONS) == (not layer.weights), name


@pytest.mark.parametrize("field, value", [("fusion", "uncertainy"), ("backbone", "resnet19"),
                                          ("output_stride", 32)])
def test_run_config_refuses_unknown_names_before_anything_runs(field, value):
    with pytest.raises(ValueError, match=f"{field}={value!r}: expected one of"):
        preset("synthetic", **{field: value})


def test_config_carries_backbone_fusion_and_class_names():
    model = synergyseg.build_synergyseg(5, fusion="max", class_names=list("abcde"),
                                        palette=[(i, 2 * i, 3 * i) for i in range(5)], **TINY)
    assert (model.backbone_name, model.fusion_name, model.num_classes) == ("resnet18", "max", 5)
    rebuilt = synergyseg.SynergySeg.from_config(json.loads(json.dumps(model.get_config())))
    assert (rebuilt.backbone_name, rebuilt.fusion_name, rebuilt.class_names) == ("resnet18", "max", list("abcde"))
    assert rebuilt.palette[4] == [4, 8, 12]
    assert rebuilt.count_params() == model.count_params()
    with pytest.raises(ValueError, match="3 class_names for a model of 5 classes"):
        synergyseg.SynergySeg(model.submodel, class_names=["a", "b", "c"])


def test_with_fusion_shares_weights_and_keeps_class_names():
    model = synergyseg.build_synergyseg(4, class_names=list("wxyz"), **TINY)
    other = model.with_fusion("average", scale_outputs=True)
    assert other.submodel is model.submodel
    assert other.class_names == list("wxyz") and other.fusion_name == "average"
    x = np.random.default_rng(0).uniform(0, 255, (1, 24, 40, 3)).astype("float32")
    # Called eagerly: predict() traced the two-scale graph first, for one small image.
    out = {k: keras.ops.convert_to_numpy(v) for k, v in other(x, training=False).items()}
    np.testing.assert_allclose(out[names.FUSED], (out[names.S_LO] + out[names.S_HI]) / 2, atol=1e-6)


def test_legacy_file_from_build_synergyseg_still_loads():
    """tests/data/legacy_synergyseg.keras was saved by build_synergyseg before the SynergySeg class
    (commit fd2976c); its outputs were saved beside it by that code."""
    path = os.path.join(DATA, "legacy_synergyseg.keras")
    x = np.load(os.path.join(DATA, "legacy_synergyseg_input.npy"))
    expected = np.load(os.path.join(DATA, "legacy_synergyseg_output.npy"))
    plain = keras.models.load_model(path, safe_mode=True)
    assert not isinstance(plain, synergyseg.SynergySeg)
    model = run_folder.load_synergyseg_model(path)
    assert isinstance(model, synergyseg.SynergySeg)
    assert (model.fusion_name, model.num_classes, model.name) == ("uncertainty", 5, "legacy")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x, training=False)), expected, atol=1e-5)
    # Rebuilt around the file's own layers: it shares the loaded weights, nothing is copied.
    nested = [layer for layer in plain.layers if isinstance(layer, keras.Model)]
    assert synergyseg.as_synergyseg(plain).submodel is nested[0]


def test_compile_without_arguments_is_the_papers_recipe():
    # compile()'s recipe and fit()'s decay length are SynergySeg's whatever its submodel: around a
    # one-convolution submodel on pixels scaled to [0, 1] (probabilities at its input's size, as a
    # DeepLab head's), fit traces a training step in about a second, where the ResNet-18
    # DeepLabV3+ pair took ~30 CPU-s. The real model's fit: test_train_run.py, test_train_script.py.
    image = keras.Input((None, None, 3))
    scores = keras.layers.Conv2D(3, 1, activation="softmax")(keras.layers.Rescaling(1 / 255)(image))
    model = synergyseg.SynergySeg(keras.Model(image, scores))
    model.compile(decay_steps=100)
    opt = model.optimizer
    assert isinstance(opt, keras.optimizers.SGD)
    assert (opt.momentum, opt.weight_decay) == (0.9, 5e-4)
    schedule = opt.learning_rate if callable(opt.learning_rate) else opt._learning_rate
    lr = [float(schedule(step)) for step in (0, 50, 100)]
    np.testing.assert_allclose(lr, [0.01, 0.01 * 0.5 ** 0.9, 0.0], rtol=1e-5)
    # Loss ignores 255: a batch whose labels are all 255 but one pixel has that pixel's loss.
    x = np.random.default_rng(1).uniform(0, 255, (1, 16, 16, 3)).astype("float32")
    probs = keras.ops.convert_to_numpy(model(x, training=False))
    y = np.full((1, 16, 16), 255, np.int32)
    y[0, 3, 4] = np.argmin(probs[0, 3, 4])  # an unlikely class: a loss far from float32's noise
    assert float(model.loss(y, probs)) == pytest.approx(-np.log(probs[0, 3, 4, y[0, 3, 4]]), rel=1e-4)
    # The README's lines: compile() with no arguments, fit on a tf.data pipeline; the first fit
    # sets the decay's length (3 epochs x 2 batches), so the rate reaches 0 at its last step.
    model.compile()
    ds = tf.data.Dataset.from_tensor_slices((np.repeat(x, 4, 0), np.zeros((4, 16, 16), np.int32))).batch(2)
    history = model.fit(ds, epochs=3, verbose=0, shuffle=False)
    assert set(history.history) == {"loss", "mean_iou"}
    assert int(model.optimizer.iterations) == 6
    assert float(model.optimizer.learning_rate) == pytest.approx(0.0, abs=1e-9)
    unknown = ds.filter(lambda image, label: True)
    model.compile()
    with pytest.raises(ValueError, match="pass steps_per_epoch= to fit"):
        model.fit(unknown, epochs=1, verbose=0)


def test_trained_run_loads_in_a_fresh_process_after_import_synergyseg(synthetic_run, tmp_path):
    """What best.keras / final.keras hold: the model with its optimizer and warm-up poly schedule.

    The run is the session's (conftest.py): train.py's code path, 2 warm-up steps. Its final.keras
    must predict in a fresh process what the model predicted in memory at the end of training."""
    path = str(synthetic_run.run_dir / "final.keras")
    np.save(tmp_path / "x.npy", synthetic_run.final_input)
    script = f"""
import json, keras, numpy as np, synergyseg
m = keras.models.load_model({path!r})
np.save({str(tmp_path / 'got.npy')!r}, m.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0))
schedule = getattr(m.optimizer, "_learning_rate", m.optimizer.learning_rate)
print(json.dumps([type(m).__name__, m.backbone_name, m.fusion_name, m.class_names,
                  type(schedule).__name__, int(m.optimizer.iterations),
                  getattr(schedule, "warmup_steps", None)]))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    kind, backbone, fusion_used, class_names, schedule, iterations, warmup = json.loads(
        done.stdout.strip().splitlines()[-1])
    assert (kind, backbone, fusion_used, schedule) == ("SynergySeg", "resnet18", "uncertainty",
                                                      "WarmupPolynomialDecay")
    # The optimizer's state came along: its step count and the schedule's warm-up.
    assert (iterations, warmup) == (synthetic_run.steps, 2)
    assert class_names[:3] == ["road", "sidewalk", "building"] and len(class_names) == 10
    np.testing.assert_allclose(np.load(tmp_path / "got.npy"), synthetic_run.final_probabilities, atol=1e-6)


@pytest.mark.parametrize("separable", [None, False, True])
def test_every_model_field_of_the_run_config_reaches_the_model(separable):
    config = preset("realtime-deeplab-large16", separable=separable, head_filters=24, low_level_filters=8)
    sub = build_model(config).submodel
    built = {k: sub.get_config()[k] for k in ("backbone", "output_stride", "head_filters",
                                               "low_level_filters", "separable", "dropout")}
    assert built == {"backbone": "mobilenetv3_large", "output_stride": 16, "head_filters": 24,
                     "low_level_filters": 8, "separable": separable is not False,  # None: MobileNet's default
                     "dropout": config.dropout}
    depthwise = [l for l in sub.layers if isinstance(l, keras.layers.DepthwiseConv2D)
                 and l.name.startswith(("aspp", "decoder"))]
    assert bool(depthwise) == (separable is not False)
