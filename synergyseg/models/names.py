"""The model's names, importing nothing: checked by `RunConfig.validate` before any TensorFlow loads.

Each tuple is the one list of its kind; the modules that implement the names (`resnet.RESNETS`,
`fusion.FUSIONS`) are tested to hold exactly these.
"""

# Trunks of `build_deeplabv3plus` (synergyseg/models/resnet.py; mobilenet.py for the real-time one).
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "mobilenetv3_large")

# DeepLabV3+ output strides; ASPP rates are (6, 12, 18) at 16 and doubled at 8.
OUTPUT_STRIDES = (16, 8)

# Fusions of the two scales (synergyseg/models/fusion.py); the first is the paper's eq. 1.
FUSIONS = ("uncertainty", "uncertainty_confidence", "low", "high", "average", "max", "attention")
# Those with no weights of their own: an ablation can swap them on one trained model.
WEIGHTLESS_FUSIONS = tuple(name for name in FUSIONS if name != "attention")

# Keys of a SynergySeg model's dict outputs (`scale_outputs=True`).
FUSED = "fused"
S_LO = "s_lo"
S_HI = "s_hi"
UNCERTAINTY = "uncertainty"
SCALE_OUTPUTS = (FUSED, S_LO, S_HI, UNCERTAINTY)
# The outputs that get a loss when the auxiliary loss is on.
LOSS_OUTPUTS = (FUSED, S_LO, S_HI)
