"""synergyseg: two-scale DeepLabV3+ with uncertainty fusion for real-time semantic segmentation.

Importing it registers every class a saved model or run refers to (layers, models, the learning
rate schedule), so `keras.models.load_model("runs/synthetic/best.keras")` works after it. It
imports TensorFlow first, without the start-up lines a user cannot act on (synergyseg/quiet.py).
"""

from synergyseg.quiet import quiet_tensorflow

quiet_tensorflow()  # before the imports below load TensorFlow

from synergyseg.models.deeplab import DeepLabV3Plus, build_deeplabv3plus  # noqa: E402
from synergyseg.models.fusion import (  # noqa: E402
    AttentionFusion,
    AverageFusion,
    HighScaleOnly,
    LowScaleOnly,
    MaxFusion,
    UncertaintyFusion,
    UncertaintyMask,
)
from synergyseg.models.synergy import (  # noqa: E402
    SynergySeg, as_synergyseg, build_synergyseg, submodel_of, with_fusion)
from synergyseg.models.gated import GatedSynergySeg, gated_synergyseg  # noqa: E402
from synergyseg.training.schedules import WarmupPolynomialDecay  # noqa: E402
from synergyseg.predict.segmenter import Segmenter  # noqa: E402

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
