"""Finding and loading the trained model in a `.keras` file or a train.py run folder (for evaluate and export)."""

import os

import keras

from synergyseg.models.synergy import submodel_of

# train.py's run folder: the best checkpoint by validation mIoU, else the last epoch's.
RUN_CHECKPOINTS = ("best.keras", "final.keras")


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


def load_model(path):
    """Loads the model in a `.keras` file or run folder with safe_mode (no arbitrary code), naming the file on error."""
    model_path = resolve_model_path(path)
    try:
        return keras.models.load_model(model_path, compile=False, safe_mode=True)
    except Exception as e:  # Keras raises many types for a corrupt or foreign file.
        raise ValueError(f"Cannot load {model_path!r} as a Keras model: {e}") from e


def load_synergyseg_model(path):
    """Loads a trained SynergySeg model, with a clear error if `path` holds something else.

    Args:
        path: a `.keras` file saved from `build_synergyseg`, or a run folder written by train.py.

    Returns:
        The loaded `keras.Model`.

    Raises:
        FileNotFoundError: `path` (or the run folder's checkpoint) does not exist.
        ValueError: the file is not a Keras model, or not a SynergySeg model.
    """
    model = load_model(path)
    check_synergyseg_model(model, resolve_model_path(path))
    return model


def check_synergyseg_model(model, source="model"):
    """Raises ValueError unless `model` is a SynergySeg model (shared DeepLabV3+ and a fusion layer)."""
    problem = None
    try:
        submodel_of(model)
        model.get_layer("fusion")
    except ValueError as e:
        problem = str(e)
    if problem is not None:
        raise ValueError(f"{source} is not a SynergySeg model: {problem}")
