"""Loading pretrained trunk weights from a local file (nothing is downloaded)."""

import os

import keras


def load_backbone_weights(trunk, backbone, path):
    """Sets `trunk`'s weights from the local file `path`, layer by layer, and checks every shape.

    For "resnet50"/"resnet101" the file is what `keras.applications.ResNet50(include_top=False)`
    loads (the ImageNet "notop" .h5, or weights saved from such a model); for the other trunks it
    is a weights file saved from the same trunk (`trunk.save_weights(...)`).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Backbone weights file not found: {path}")
    if backbone in ("resnet50", "resnet101"):
        reference = _applications_model(backbone, path)
    else:
        reference = None
    try:
        if reference is None:
            trunk.load_weights(path)
            return
    except Exception as e:  # Keras raises several types for a mismatching file.
        raise ValueError(f"Backbone weights file {path} does not match the {backbone} trunk: {e}") from e

    source = {layer.name: layer for layer in reference.layers if layer.weights}
    targets = [layer for layer in trunk.layers if layer.weights]
    missing = [layer.name for layer in targets if layer.name not in source]
    if missing:
        raise ValueError(
            f"Backbone weights file {path} has no weights for layers {missing[:5]} "
            f"(and {max(0, len(missing) - 5)} more) of the {backbone} trunk."
        )
    for layer in targets:
        values = source[layer.name].get_weights()
        expected = [tuple(w.shape) for w in layer.weights]
        found = [tuple(v.shape) for v in values]
        if expected != found:
            raise ValueError(
                f"Backbone weights file {path}: layer {layer.name!r} has shapes {found}, "
                f"the {backbone} trunk expects {expected} (was it saved from a different width?)."
            )
        layer.set_weights(values)


def _applications_model(backbone, path):
    constructor = {"resnet50": keras.applications.ResNet50, "resnet101": keras.applications.ResNet101}
    try:
        return constructor[backbone](weights=path, include_top=False)
    except Exception as e:
        raise ValueError(
            f"Backbone weights file {path} could not be loaded as keras.applications."
            f"{constructor[backbone].__name__}(include_top=False) weights: {e}"
        ) from e
