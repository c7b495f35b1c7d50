"""synergyseg: two-scale DeepLabV3+ with uncertainty fusion for real-time semantic segmentation.

Importing it registers every class a saved model or run refers to (layers, models, the learning
rate schedule), so `keras.models.load_model("runs/synthetic/best.keras")` works after it.
"""

from synergyseg.models.deeplab import DeepLabV3Plus, build_deeplabv3plus
from synergyseg.models.fusion import (
    AttentionFusion,
    AverageFusion,
    HighScaleOnly,
    LowScaleOnly,
    MaxFusion,
    UncertaintyFusion,
    UncertaintyMask,
)
from synergyseg.models.synergy import SynergySeg, as_synergyseg, build_synergyseg, submodel_of, with_fusion
from synergyseg.models.gated import GatedSynergySeg, gated_synergyseg
from synergyseg.training.schedules import WarmupPolynomialDecay
from synergyseg.predict.segmenter import Segmenter

__version__ = "0.1.0"

__all__ = [
    "AttentionFusion",
    "AverageFusion",
    "DeepLabV3Plus",
    "GatedSynergySeg",
    "HighScaleOnly",
    "LowScaleOnly",
    "MaxFusion",
    "Segmenter",
    "SynergySeg",
    "UncertaintyFusion",
    "UncertaintyMask",
    "WarmupPolynomialDecay",
    "as_synergyseg",
    "build_deeplabv3plus",
    "build_synergyseg",
    "gated_synergyseg",
    "submodel_of",
    "with_fusion",
]
