"""The two-scale SynergySeg model: one shared DeepLabV3+ on the full and the half-resolution image."""

import keras

from synergyseg.models.deeplab import build_deeplabv3plus
from synergyseg.models.fusion import UncertaintyMask, make_fusion
from synergyseg.models.resize import Downsample, ResizeLike


def build_synergyseg(
    num_classes,
    backbone="resnet50",
    output_stride=16,
    fusion="uncertainty",
    backbone_weights=None,
    scale_outputs=False,
    name="synergyseg",
    **deeplab_kwargs,
):
    """Builds the paper's model: shared DeepLabV3+ at scales 1.0 and 0.5, merged by `fusion`.

    Args:
        num_classes: number of classes (at least 2).
        backbone, output_stride, backbone_weights: as in `build_deeplabv3plus`.
        fusion: "uncertainty" (eq. 1, default), "uncertainty_confidence", "low", "high",
            "average", "max" or "attention" (see `synergyseg.models.fusion`).
        scale_outputs: if True, the model returns a dict with "fused", "s_lo" (the low scale's
            prediction upsampled to the input size), "s_hi" and "uncertainty" (`U(1 - max_c S_lo)`),
            for auxiliary losses, ablations and pictures; otherwise only the fused map.
        **deeplab_kwargs: passed to `build_deeplabv3plus` (backbone_width, head_filters, ...).

    Input `(batch, h, w, 3)` RGB in [0, 255], any h and w (odd too); output `(batch, h, w,
    num_classes)` float32 probabilities (or the dict above).

    Example:
        >>> model = build_synergyseg(num_classes=19)
        >>> model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(ignore_class=255))
    """
    fuse = make_fusion(fusion)
    submodel = build_deeplabv3plus(
        num_classes,
        backbone=backbone,
        output_stride=output_stride,
        backbone_weights=backbone_weights,
        **deeplab_kwargs,
    )
    return _two_scale(submodel, fuse, scale_outputs, name)


def _two_scale(submodel, fuse, scale_outputs, name):
    image = keras.Input((None, None, 3), name="image")
    image_lo = Downsample(2, name="half_resolution")(image)
    # One submodel instance called twice: the two scales share every weight.
    s_hi = submodel(image)
    s_lo = submodel(image_lo)
    fused = fuse([s_lo, s_hi])
    if not scale_outputs:
        return keras.Model(image, fused, name=name)
    outputs = {
        "fused": fused,
        "s_lo": ResizeLike(name="s_lo_upsample", dtype="float32")([s_lo, image]),
        "s_hi": s_hi,
        "uncertainty": UncertaintyMask(name="uncertainty")([s_lo, image]),
    }
    return keras.Model(image, outputs, name=name)


def with_fusion(model, fusion=None, scale_outputs=False):
    """A SynergySeg model that shares `model`'s weights, with another fusion or extra outputs.

    Nothing is copied or retrained: the new model calls the same DeepLabV3+ instance, so an
    ablation can compare fusions on one set of trained weights.

    Args:
        model: a model from `build_synergyseg` (or loaded from its `.keras` file).
        fusion: a fusion name (see `build_synergyseg`), or None to keep `model`'s fusion layer.
        scale_outputs: as in `build_synergyseg`.
    """
    submodel = submodel_of(model)
    if fusion is None:
        try:
            fuse = model.get_layer("fusion")
        except ValueError as e:
            raise ValueError(f"Model {model.name!r} has no layer named 'fusion'; is it a SynergySeg model?") from e
    else:
        fuse = make_fusion(fusion)
    return _two_scale(submodel, fuse, scale_outputs, model.name)


def submodel_of(model):
    """The shared DeepLabV3+ inside a SynergySeg model (to run it alone or swap fusions)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            return layer
    raise ValueError(f"Model {model.name!r} holds no DeepLabV3+ submodel; is it a SynergySeg model?")
