"""Finding and loading the trained model in a `.keras` file or a train.py run folder (for evaluate and export)."""

import json
import os

import keras

from synergyseg.data.info import info_for
from synergyseg.models.names import FUSED
from synergyseg.models.synergy import as_synergyseg

# train.py's run folder: the best checkpoint by validation mIoU, else the last epoch's.
RUN_CHECKPOINTS = ("best.keras", "final.keras")
RUN_CONFIG = "config.json"


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
    config_path = os.path.join(os.path.dirname(os.path.abspath(resolve_model_path(path))), RUN_CONFIG)
    if not os.path.isfile(config_path):
        return None, None
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
        info = info_for(config.get("dataset"), config.get("mapillary_config"))
    except FileNotFoundError:  # a Mapillary run whose config.json stayed on the training machine
        return None, None
    except (OSError, ValueError, AttributeError) as e:
        raise ValueError(f"{config_path}: cannot tell the run's classes ({e})") from e
    shape = model.output_shape
    if info.num_classes != int((shape[FUSED] if isinstance(shape, dict) else shape)[-1]):
        return None, None
    return list(names or info.class_names), [list(c) for c in (palette or info.colors)]
