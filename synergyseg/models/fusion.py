"""Fusions of the low-scale and high-scale predictions: the paper's eq. 1 and its baselines.

Every fusion is a layer called on `[s_lo, s_hi]`: `s_lo` is the low-scale (half-resolution) softmax
map `(batch, h, w, C)`, `s_hi` the high-scale one `(batch, H, W, C)`; it returns the fused
`(batch, H, W, C)` map, with U(.) = bilinear upsampling of `s_lo` to (H, W). Fusions live apart from
the backbone (as Model Garden argues) so any of them mixes with any submodel.
"""

import keras
from keras import layers, ops

from synergyseg.models.names import FUSIONS, WEIGHTLESS_FUSIONS
from synergyseg.models.resize import resize_bilinear, spatial_size


def _check_pair(input_shape, layer_name):
    if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2:
        raise ValueError(f"{layer_name} expects [s_lo, s_hi]; received input shape {input_shape}")
    lo, hi = input_shape
    if len(lo) != 4 or len(hi) != 4 or lo[-1] != hi[-1]:
        raise ValueError(
            f"{layer_name} expects s_lo (batch, h, w, C) and s_hi (batch, H, W, C) with the same C; "
            f"received {tuple(lo)} and {tuple(hi)}"
        )


def normalize_classes(s):
    """`s` divided by its sum over classes (the last axis): a distribution with the same argmax."""
    return s / ops.sum(s, axis=-1, keepdims=True)


def eq1(up_lo, s_hi, mask):
    """Eq. 1 on the upsampled low scale: `U(S_lo) + S_hi * mask`, mask `U(1 - S_lo)` or `U(1 - max_c S_lo)`."""
    return up_lo + s_hi * mask


class _Fusion(keras.layers.Layer):
    """Shared plumbing: shape checks, U(s_lo), optional renormalization over classes."""

    def __init__(self, normalize=True, **kwargs):
        # Probabilities stay float32 under a mixed-precision policy: eq. 1 and the loss need it.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.normalize = normalize

    def build(self, input_shape):
        _check_pair(input_shape, type(self).__name__)

    def upsample(self, s_lo, s_hi):
        return resize_bilinear(s_lo, spatial_size(s_hi))

    def finish(self, s):
        return normalize_classes(s) if self.normalize else s

    def compute_output_shape(self, input_shape):
        return input_shape[1]

    def get_config(self):
        return {**super().get_config(), "normalize": self.normalize}


@keras.saving.register_keras_serializable(package="synergyseg")
class UncertaintyFusion(_Fusion):
    """The paper's eq. 1: `S = U(S_lo) + S_hi * U(1 - S_lo)`.

    Per class this equals the probabilistic OR `1 - (1 - U(S_lo)) * (1 - S_hi)`: a class the low
    scale is sure of stays unless the high scale is near-certain of another, and where the low
    scale is split (boundaries, thin and far objects) the high scale decides.

    Args:
        mode: "elementwise" (default): eq. 1 exactly, per class. "confidence": the mask is the
            per-pixel uncertainty `U(1 - max_c S_lo)` (the white mask of the paper's Fig. 1),
            so `S = U(S_lo) + S_hi * U(1 - max_c S_lo)`.
        normalize: divide S by its sum over classes (default True). S as written is not a
            distribution (it sums to more than 1), so cross-entropy cannot be trained on it;
            dividing each pixel by a positive number keeps its argmax, so the predicted classes
            are exactly eq. 1's. With False the layer returns eq. 1 unchanged.

    Inputs `[s_lo (batch, h, w, C), s_hi (batch, H, W, C)]`; output `(batch, H, W, C)`.

    Example:
        >>> fused = UncertaintyFusion()([s_lo, s_hi])
    """

    MODES = ("elementwise", "confidence")

    def __init__(self, mode="elementwise", normalize=True, **kwargs):
        super().__init__(normalize=normalize, **kwargs)
        if mode not in self.MODES:
            raise ValueError(f"UncertaintyFusion mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode

    def call(self, inputs):
        s_lo, s_hi = inputs
        up_lo = self.upsample(s_lo, s_hi)
        if self.mode == "elementwise":
            # U(1 - S_lo) == 1 - U(S_lo): bilinear interpolation is affine with weights summing to 1.
            mask = 1.0 - up_lo
        else:
            mask = self.upsample(1.0 - ops.max(s_lo, axis=-1, keepdims=True), s_hi)
        return self.finish(eq1(up_lo, s_hi, mask))

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="synergyseg")
class LowScaleOnly(_Fusion):
    """Baseline: `U(S_lo)`, the half-resolution prediction alone."""

    def call(self, inputs):
        s_lo, s_hi = inputs
        return self.upsample(s_lo, s_hi)


@keras.saving.register_keras_serializable(package="synergyseg")
class HighScaleOnly(_Fusion):
    """Baseline: `S_hi`, the full-resolution prediction alone."""

    def call(self, inputs):
        return inputs[1]


@keras.saving.register_keras_serializable(package="synergyseg")
class AverageFusion(_Fusion):
    """Baseline: `(U(S_lo) + S_hi) / 2`, the usual multi-scale averaging."""

    def call(self, inputs):
        s_lo, s_hi = inputs
        return 0.5 * (self.upsample(s_lo, s_hi) + s_hi)


@keras.saving.register_keras_serializable(package="synergyseg")
class MaxFusion(_Fusion):
    """Baseline: `max(U(S_lo), S_hi)` per class (max-pooling over scales), renormalized if asked."""

    def call(self, inputs):
        s_lo, s_hi = inputs
        return self.finish(ops.maximum(self.upsample(s_lo, s_hi), s_hi))


@keras.saving.register_keras_serializable(package="synergyseg")
class AttentionFusion(_Fusion):
    """Baseline: learned per-pixel attention, after Tao et al., "Hierarchical multi-scale attention".

    `S = U(a * S_lo) + (1 - U(a)) * S_hi`, with `a = sigmoid(head(S_lo))` predicted at the low
    scale by a small conv head (3x3 conv, BN, ReLU, 1x1 conv). Tao et al. read the attention from
    the decoder's features; here it reads the low-scale class probabilities so every fusion has
    the same `[s_lo, s_hi]` interface. It must be trained (the other fusions have no weights).

    Args:
        filters: channels of the attention head's hidden layer.
    """

    def __init__(self, filters=32, **kwargs):
        kwargs.setdefault("normalize", False)
        super().__init__(**kwargs)
        self.filters = filters
        self.hidden = layers.Conv2D(filters, 3, padding="same", use_bias=False, name="attention_conv")
        self.hidden_bn = layers.BatchNormalization(name="attention_bn")
        self.score = layers.Conv2D(1, 1, name="attention_score")

    def build(self, input_shape):
        super().build(input_shape)
        lo = tuple(input_shape[0])
        self.hidden.build(lo)
        self.hidden_bn.build(lo[:-1] + (self.filters,))
        self.score.build(lo[:-1] + (self.filters,))

    def attention(self, s_lo, training=None):
        """The low-scale attention `a`, `(batch, h, w, 1)` in (0, 1)."""
        x = ops.relu(self.hidden_bn(self.hidden(s_lo), training=training))
        return ops.sigmoid(self.score(x))

    def call(self, inputs, training=None):
        s_lo, s_hi = inputs
        a = ops.cast(self.attention(s_lo, training=training), s_lo.dtype)
        return self.finish(self.upsample(a * s_lo, s_hi) + (1.0 - self.upsample(a, s_hi)) * s_hi)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


@keras.saving.register_keras_serializable(package="synergyseg")
class UncertaintyMask(keras.layers.Layer):
    """The per-pixel uncertainty of the low scale, `U(1 - max_c S_lo)`, for pictures (paper's Fig. 1).

    Inputs `[s_lo (batch, h, w, C), reference (batch, H, W, any)]`; output `(batch, H, W, 1)`,
    1 where the low scale is unsure (white in the paper's masks), near 0 where it is confident.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")  # a probability map, like the fusions' outputs
        super().__init__(**kwargs)

    def call(self, inputs):
        s_lo, reference = inputs
        return resize_bilinear(1.0 - ops.max(s_lo, axis=-1, keepdims=True), spatial_size(reference))

    def compute_output_shape(self, input_shape):
        lo, ref = input_shape
        return (lo[0], ref[1], ref[2], 1)


_FUSION_LAYERS = {
    "uncertainty": lambda: UncertaintyFusion(mode="elementwise", name="fusion"),
    "uncertainty_confidence": lambda: UncertaintyFusion(mode="confidence", name="fusion"),
    "low": lambda: LowScaleOnly(name="fusion"),
    "high": lambda: HighScaleOnly(name="fusion"),
    "average": lambda: AverageFusion(name="fusion"),
    "max": lambda: MaxFusion(name="fusion"),
    "attention": lambda: AttentionFusion(name="fusion"),
}



def make_fusion(name):
    """The fusion layer for one of `FUSIONS`' names (named "fusion" in the model)."""
    if name not in FUSIONS:
        raise ValueError(f"Unknown fusion {name!r}; expected one of {FUSIONS}")
    return _FUSION_LAYERS[name]()


def fusion_name(layer):
    """The `FUSIONS` name of a fusion layer (the inverse of `make_fusion`)."""
    for name, make in _FUSION_LAYERS.items():
        reference = make()
        if type(reference) is type(layer) and getattr(reference, "mode", None) == getattr(layer, "mode", None):
            return name
    raise ValueError(f"{type(layer).__name__} is not one of the fusions {FUSIONS}")


__all__ = [
    "AttentionFusion",
    "AverageFusion",
    "FUSIONS",
    "HighScaleOnly",
    "LowScaleOnly",
    "MaxFusion",
    "UncertaintyFusion",
    "UncertaintyMask",
    "WEIGHTLESS_FUSIONS",
    "fusion_name",
    "make_fusion",
]
