"""synergyseg: two-scale DeepLabV3+ with uncertainty fusion for real-time semantic segmentation."""

from synergyseg.models.deeplab import build_deeplabv3plus
from synergyseg.models.fusion import (
    AttentionFusion,
    AverageFusion,
    HighScaleOnly,
    LowScaleOnly,
    MaxFusion,
    UncertaintyFusion,
    UncertaintyMask,
)
from synergyseg.models.synergy import build_synergyseg, submodel_of, with_fusion

__version__ = "0.1.0"

__all__ = [
    "AttentionFusion",
    "AverageFusion",
    "HighScaleOnly",
    "LowScaleOnly",
    "MaxFusion",
    "UncertaintyFusion",
    "UncertaintyMask",
    "build_deeplabv3plus",
    "build_synergyseg",
    "submodel_of",
    "with_fusion",
]
