"""Loading pretrained trunk weights from a local file (nothing is downloaded)."""

import os

import keras

from synergyseg.models.mobilenet import (MOBILENETS, NOT_PRETRAINED_PREFIX, applications_arguments,
                                         applications_name)

# Trunks whose weights load from a keras.applications file, and the constructor that reads it.
APPLICATIONS = {"resnet50": "ResNet50", "resnet101": "ResNet101",
                **{name: applications_name(name) for name in MOBILENETS}}


def load_backbone_weights(trunk, backbone, path):
    """Sets `trunk`'s weights from the local file `path`, layer by layer, and checks every shape.

    For "resnet50"/"resnet101" and the MobileNetV3 variants the file is what
    `keras.applications.ResNet50(include_top=False)` (or `ResNet101`, `MobileNetV3Large`,
    `MobileNetV3Small`, with `minimalistic=True` for "_minimal") loads: the ImageNet "notop" .h5
    keras.applications publishes, or weights
    saved from such a model; every layer the variant keeps is set (a reduced tail's halved layers,
    named `reduced_...`, keep their initial values). For the other trunks it is a weights file
    saved from the same trunk (`trunk.save_weights(...)`).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Backbone weights file not found: {path}")
    if backbone in APPLICATIONS:
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
    targets = [layer for layer in trunk.layers
               if layer.weights and not layer.name.startswith(NOT_PRETRAINED_PREFIX)]
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
    constructor = getattr(keras.applications, APPLICATIONS[backbone])
    try:
        return constructor(weights=path, include_top=False, input_shape=(None, None, 3),
                           **(applications_arguments(backbone) if backbone in MOBILENETS else {}))
    except Exception as e:
        raise ValueError(
            f"Backbone weights file {path} could not be loaded as keras.applications."
            f"{APPLICATIONS[backbone]}(include_top=False"
            f"{', minimalistic=True' if backbone in MOBILENETS and MOBILENETS[backbone][2] else ''}) weights: {e}"
        ) from e
