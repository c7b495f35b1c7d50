"""Finding and loading the trained model in a `.keras` file or a train.py run folder (for evaluate and export)."""

import os

import keras

from synergyseg.models.synergy import as_synergyseg

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
    """Loads the model in a `.keras` file or run folder with safe_mode (no arbitrary code), naming the file on error.

    A two-scale model comes back as a `SynergySeg`, also from a file saved before that class.
    """
    model_path = resolve_model_path(path)
    try:
        model = keras.models.load_model(model_path, compile=False, safe_mode=True)
    except Exception as e:  # Keras raises many types for a corrupt or foreign file.
        raise ValueError(f"Cannot load {model_path!r} as a Keras model: {e}") from e
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
