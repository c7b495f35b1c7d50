"""compile() -> fit never trains at learning rate 0 without saying so: the decay's length is fit's own
count of steps for every input Keras takes, it is saved with the model, and a fit past its end is refused."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import synergyseg
from synergyseg.training.schedules import decay_schedule

SIZE = 16


def _two_scale():
    """A SynergySeg on a one-conv submodel: the contract is the model class's, and its fits take a second."""
    image = keras.Input((None, None, 3))
    probabilities = keras.layers.Conv2D(3, 1, activation="softmax", dtype="float32")(image / 255.0)
    return synergyseg.SynergySeg(keras.Model(image, probabilities, name="one_conv"))


class _Stop(Exception):
    pass


class _StopBeforeFirstStep(keras.callbacks.Callback):
    """Ends a fit before its first step (nothing traced or trained): the decay is sized by then."""

    def on_train_batch_begin(self, batch, logs=None):
        raise _Stop


class _Batches(keras.utils.PyDataset):
    def __init__(self, count, batch=2):
        super().__init__()
        self.count, self.batch = count, batch

    def __len__(self):
        return self.count

    def __getitem__(self, i):
        rng = np.random.default_rng(i)
        return (rng.uniform(0, 255, (self.batch, SIZE, SIZE, 3)).astype("float32"),
                rng.integers(0, 3, (self.batch, SIZE, SIZE)).astype("int32"))


def _arrays(n):
    rng = np.random.default_rng(n)
    return (rng.uniform(0, 255, (n, SIZE, SIZE, 3)).astype("float32"),
            rng.integers(0, 3, (n, SIZE, SIZE)).astype("int32"))


def _generator(batches):
    for i in range(batches):
        yield _Batches(batches)[i]


def _paper_lr(step, decay_steps):
    return 0.01 * (1 - min(step, decay_steps) / decay_steps) ** 0.9


@pytest.fixture(scope="module")
def model():
    return _two_scale()


def _inputs(kind, model):
    """`(fit arguments, steps per epoch Keras runs)` for each kind of input fit takes."""
    x, y = _arrays(10)
    if kind == "arrays":  # ceil(10 / 4)
        return dict(x=x, y=y, batch_size=4), 3
    if kind == "arrays_default_batch":  # Keras's default batch of 32: one step
        return dict(x=x, y=y), 1
    if kind == "dict_of_arrays":
        return dict(x={model.inputs[0].name: x}, y=y, batch_size=3), 4
    if kind == "validation_split":  # 8 samples left for training
        return dict(x=x, y=y, batch_size=4, validation_split=0.2), 2
    if kind == "tf_data":
        return dict(x=tf.data.Dataset.from_tensor_slices((x, y)).batch(3)), 4
    if kind == "py_dataset":  # len() batches: the 100 batches counted as 100 // 32
        return dict(x=_Batches(7)), 7
    if kind == "generator_with_steps":
        return dict(x=_generator(5), steps_per_epoch=5), 5
    if kind == "steps_per_epoch":  # fewer steps than the data has
        return dict(x=tf.data.Dataset.from_tensor_slices((x, y)).batch(1).repeat(), steps_per_epoch=6), 6
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["arrays", "arrays_default_batch", "dict_of_arrays", "validation_split",
                                  "tf_data", "py_dataset", "generator_with_steps", "steps_per_epoch"])
def test_the_first_fit_sizes_the_decay_with_kerass_own_step_count(model, kind):
    model.compile()
    arguments, steps = _inputs(kind, model)
    with pytest.raises(_Stop):
        model.fit(**arguments, epochs=3, verbose=0, callbacks=[_StopBeforeFirstStep()])
    assert decay_schedule(model.optimizer).decay_steps == 3 * steps


@pytest.mark.parametrize("kind", ["generator", "unknown_size_dataset"])
def test_a_fit_of_unknown_length_after_compile_is_refused_with_the_fix(model, kind):
    model.compile()
    x, y = _arrays(4)
    data = _generator(2) if kind == "generator" else tf.data.Dataset.from_tensor_slices((x, y)).batch(2).filter(
        lambda a, b: True)
    with pytest.raises(ValueError, match="pass steps_per_epoch= to fit"):
        model.fit(data, epochs=1, verbose=0)


def test_the_decay_ends_at_the_last_step_and_a_second_fit_is_refused():
    model = _two_scale()
    model.compile()
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_begin=lambda b, logs: seen.append(float(model.optimizer.learning_rate)))
    model.fit(_Batches(2), epochs=2, verbose=0, callbacks=[record])
    assert int(model.optimizer.iterations) == 4
    np.testing.assert_allclose(seen, [_paper_lr(s, 4) for s in range(4)], rtol=1e-5)
    assert seen[-1] > 0 and float(model.optimizer.learning_rate) == pytest.approx(0.0, abs=1e-9)
    # A second fit (after a smoke test, say) would train at rate 0: refused, nothing changes.
    before = [w.numpy().copy() for w in model.weights]
    with pytest.raises(ValueError, match=r"steps 5\.\.6.*ends at step 4.*model\.compile\(\)"):
        model.fit(_Batches(2), epochs=1, verbose=0)
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, model.weights))


def test_compile_save_load_fit_sizes_the_decay_then_a_saved_decay_is_continued(tmp_path):
    model = _two_scale()
    model.compile()
    model.save(tmp_path / "compiled.keras")
    loaded = keras.models.load_model(tmp_path / "compiled.keras", safe_mode=True)
    assert decay_schedule(loaded.optimizer).decay_steps is None  # unset, not a placeholder of 1

    # A run of 3 epochs of 2 steps, stopped after its first epoch (a kill, say), saved.
    class StopAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    loaded.fit(_Batches(2), epochs=3, verbose=0, callbacks=[StopAfterFirstEpoch()])
    assert (int(loaded.optimizer.iterations), decay_schedule(loaded.optimizer).decay_steps) == (2, 6)
    loaded.save(tmp_path / "epoch1.keras")

    resumed = keras.models.load_model(tmp_path / "epoch1.keras", safe_mode=True)
    assert decay_schedule(resumed.optimizer).decay_steps == 6
    with pytest.raises(ValueError, match=r"steps 3\.\.8.*ends at step 6"):
        resumed.fit(_Batches(2), epochs=3, verbose=0)  # 3 more epochs: past the end
    resumed.fit(_Batches(2), epochs=3, initial_epoch=1, verbose=0)  # the rest of the run
    assert int(resumed.optimizer.iterations) == 6
    assert float(resumed.optimizer.learning_rate) == pytest.approx(0.0, abs=1e-9)
