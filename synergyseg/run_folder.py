"""The run folder train.py writes, and the model in it or in a `.keras` file: one module for both.

    RUN/config.json          the RunConfig (written once the run is checked)
    RUN/best.keras           the best epoch by validation mIoU (the model a run folder serves)
    RUN/final.keras          the last epoch's model
    RUN/history.csv          one row per epoch
    RUN/metrics.json         validation scores of final.keras
    RUN/training_curves.png  loss, mIoU and learning rate per epoch
    RUN/backup/              the resume state while the run is unfinished
    RUN/tensorboard/         TensorBoard logs
    RUN/evaluation/          evaluate.py's tables and figures

train.py, evaluate.py, export and predict find these paths and read the config here only, and
write (`save_model`) and read (`load_model`) model files here only: neither passes a model with a
NaN or infinite variable.
"""

import dataclasses
import os

import keras
import numpy as np

from synergyseg.data.info import info_for
from synergyseg.models.names import FUSED
from synergyseg.models.synergy import as_synergyseg
from synergyseg.atomic import atomic_output
from synergyseg.training.config import RunConfig

# The best checkpoint by validation mIoU, else the last epoch's.
RUN_CHECKPOINTS = ("best.keras", "final.keras")
RUN_CONFIG = "config.json"


@dataclasses.dataclass(frozen=True)
class RunFolder:
    """The paths of one run folder, and its config.

    Example:
        >>> run = RunFolder("runs/synthetic")
        >>> run.config().val_files, run.checkpoint()
    """

    path: str

    def __post_init__(self):
        object.__setattr__(self, "path", os.fspath(self.path))

    def file(self, name):
        return os.path.join(self.path, name)

    config_json = property(lambda self: self.file(RUN_CONFIG))
    best = property(lambda self: self.file(RUN_CHECKPOINTS[0]))
    final = property(lambda self: self.file(RUN_CHECKPOINTS[1]))
    history = property(lambda self: self.file("history.csv"))
    metrics = property(lambda self: self.file("metrics.json"))
    curves = property(lambda self: self.file("training_curves.png"))
    backup = property(lambda self: self.file("backup"))
    tensorboard = property(lambda self: self.file("tensorboard"))
    evaluation = property(lambda self: self.file("evaluation"))

    @classmethod
    def of_model(cls, model_path):
        """The run folder a `.keras` file sits in (its config may be absent)."""
        return cls(os.path.dirname(os.path.abspath(os.fspath(model_path))))

    def holds_run(self):
        """True once a run trained here: its backup/ (unfinished) or final.keras (finished)."""
        return os.path.isdir(self.backup) or os.path.isfile(self.final)

    def config(self):
        """The run's `RunConfig`, or None when the folder has no config.json (a bare model file)."""
        return RunConfig.from_json(self.config_json) if os.path.isfile(self.config_json) else None

    def checkpoint(self):
        """The model a run folder serves: best.keras, else final.keras."""
        return resolve_model_path(self.path)


def resolve_model_path(path):
    """The `.keras` file for `path`: the file itself, or a run folder's best.keras (else final.keras)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        for name in RUN_CHECKPOINTS:
            candidate = os.path.join(path, name)
            if os.path.isfile(candidate):
                return candidate
        raise FileNotFoundError(
            f"Run folder {path!r} holds neither {' nor '.join(RUN_CHECKPOINTS)}; "
            "pass a .keras file or a folder written by train.py"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Model file {path!r} does not exist")
    if not path.endswith(".keras"):
        raise ValueError(f"Model file {path!r} is not a .keras file (Keras 3 format expected)")
    return path


def non_finite_variables(variables):
    """Paths of the variables that hold NaN or infinity (weights, moving statistics, slots)."""
    bad = []
    for v in variables:
        value = np.asarray(v)
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            bad.append(getattr(v, "path", getattr(v, "name", "?")))
    return bad


def check_finite(model, path):
    """Raises ValueError naming `path` and the first of `model`'s variables that is not finite.

    A diverged training leaves NaN or infinity in a variable (often a batch-norm variance); such a
    model predicts one class everywhere, so no tool writes, scores, exports or serves it.
    """
    bad = non_finite_variables(model.weights)
    if bad:
        raise ValueError(
            f"{path}: variable {bad[0]} holds NaN or infinity ({len(bad)} of {len(model.weights)} "
            "variables do); the model diverged and is refused. Use a checkpoint saved before "
            "the divergence, or train again with a lower learning rate")


def save_model(model, path):
    """Saves `model` as a `.keras` file atomically, after checking that every variable is finite."""
    check_finite(model, path)
    with atomic_output(path) as tmp:
        model.save(tmp)


def load_model(path):
    """Loads the model in a `.keras` file or run folder with safe_mode (no arbitrary code), naming the file on error.

    A two-scale model comes back as a `SynergySeg`, also from a file saved before that class. A
    model with a NaN or infinite variable is refused (`check_finite`).
    """
    model_path = resolve_model_path(path)
    try:
        model = keras.models.load_model(model_path, compile=False, safe_mode=True)
    except Exception as e:  # Keras raises many types for a corrupt or foreign file.
        raise ValueError(f"Cannot load {model_path!r} as a Keras model: {e}") from e
    check_finite(model, model_path)
    try:
        # A two-scale model saved by an older version becomes a SynergySeg; others stay as they are.
        return as_synergyseg(model, model_path)
    except ValueError:
        return model


def load_synergyseg_model(path):
    """Loads a trained SynergySeg model, with a clear error if `path` holds something else.

    Args:
        path: a `.keras` file saved from a `SynergySeg` (or an older `build_synergyseg`), or a
            run folder written by train.py.

    Returns:
        The loaded `SynergySeg` (a file from an older version is rebuilt around its layers).

    Raises:
        FileNotFoundError: `path` (or the run folder's checkpoint) does not exist.
        ValueError: the file is not a Keras model, or not a SynergySeg model.
    """
    return as_synergyseg(load_model(path), resolve_model_path(path))


def class_info(model, path=None):
    """`(class_names, palette)` for a loaded model: its own, else its run folder's dataset, else Nones.

    Models saved before SynergySeg carried them have none; then the `config.json` beside the
    `.keras` file (the run's) names the dataset, whose `DatasetInfo` has them.
    """
    names, palette = getattr(model, "class_names", None), getattr(model, "palette", None)
    if names is not None and palette is not None:
        return list(names), [list(c) for c in palette]
    if path is None:
        return None, None
    run = RunFolder.of_model(resolve_model_path(path))
    config = run.config()
    if config is None:
        return None, None
    try:
        info = info_for(config.dataset, config.mapillary_config)
    except FileNotFoundError:  # a Mapillary run whose config.json stayed on the training machine
        return None, None
    except (OSError, ValueError) as e:
        raise ValueError(f"{run.config_json}: cannot tell the run's classes ({e})") from e
    shape = model.output_shape
    if info.num_classes != int((shape[FUSED] if isinstance(shape, dict) else shape)[-1]):
        return None, None
    return list(names or info.class_names), [list(c) for c in (palette or info.colors)]
