"""The fusion ablation: every weightless fusion computed from one pass of the two-scale model.

A model built with `scale_outputs=True` returns `s_lo` (the low scale upsampled to the input
size), `s_hi` and `uncertainty`. Each weightless fusion is a cheap function of those, so one
forward pass scores all of them; `tests/test_eval_ablation.py` checks that every fusion here
predicts exactly what `synergyseg.with_fusion(model, name)` predicts.
"""


from synergyseg.models.fusion import WEIGHTLESS_FUSIONS, eq1, make_fusion, normalize_classes
from synergyseg.models.names import S_HI, S_LO, UNCERTAINTY

# The paper's comparison: each scale alone, the plain combinations, and eq. 1.
ABLATION_FUSIONS = ("low", "high", "average", "max", "uncertainty")


class ScaleFusions:
    """Applies weightless fusions to the dict outputs of a `scale_outputs=True` model.

    The fusion layers of `synergyseg.models.fusion` are called on `[s_lo, s_hi]` with `s_lo` already
    at the input size: their bilinear upsampling to the same size is the identity, so the result
    equals the layer applied to the true low-scale map. "uncertainty_confidence" upsamples
    `1 - max_c S_lo` rather than `S_lo`, which is the model's `uncertainty` output, so it is
    computed from that instead.

    Args:
        names: fusion names, each in `synergyseg.models.fusion.WEIGHTLESS_FUSIONS`.

    Example:
        >>> fusions = ScaleFusions(ABLATION_FUSIONS)
        >>> probabilities = fusions(scale_model(images))   # {"low": ..., "high": ..., ...}
    """

    def __init__(self, names=ABLATION_FUSIONS):
        unknown = [n for n in names if n not in WEIGHTLESS_FUSIONS]
        if unknown:
            raise ValueError(
                f"fusions {unknown} cannot be swapped onto trained weights; choose from "
                f"{WEIGHTLESS_FUSIONS} (a fusion with weights, like 'attention', must be trained)")
        self.names = tuple(names)
        self._layers = {n: make_fusion(n) for n in self.names if n != "uncertainty_confidence"}

    def __call__(self, outputs):
        """`{name: (B, H, W, C) fused probabilities}` from `{"s_lo", "s_hi", "uncertainty"}`."""
        s_lo, s_hi = outputs[S_LO], outputs[S_HI]
        fused = {}
        for name in self.names:
            if name == "uncertainty_confidence":
                fused[name] = normalize_classes(eq1(s_lo, s_hi, outputs[UNCERTAINTY]))
            else:
                fused[name] = self._layers[name]([s_lo, s_hi])
        return fused
