"""The model's names, importing nothing: checked by `RunConfig.validate` before any TensorFlow loads.

Each tuple is the one list of its kind; the modules that implement the names (`resnet.RESNETS`,
`mobilenet.MOBILENETS`, `fusion.FUSIONS`) are tested to hold exactly these.
"""

# Trunks (synergyseg/models/resnet.py; mobilenet.py for the real-time ones). The MobileNetV3
# variants (Howard et al. 2019): "mobilenetv3_large" is the whole network (output stride 32) or
# its last stage dilated (16); "_reduced" dilates the last stage and halves its channels (the
# paper's "reduced tail" for segmentation, section 6.4); "_cut16" ends after the stride-16 stage;
# "_minimal" is keras.applications' minimalistic network (3x3 kernels, ReLU, no squeeze-excite).
MOBILENETS = ("mobilenetv3_large", "mobilenetv3_large_reduced", "mobilenetv3_large_cut16",
              "mobilenetv3_small", "mobilenetv3_small_reduced", "mobilenetv3_small_minimal",
              "mobilenetv3_small_minimal_cut16")
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101") + MOBILENETS

# Output strides of the trunk's deepest features, per trunk; the first is the default.
RESNET_OUTPUT_STRIDES = (16, 8)
BACKBONE_OUTPUT_STRIDES = {
    **{name: RESNET_OUTPUT_STRIDES for name in BACKBONES[:4]},
    "mobilenetv3_large": (16, 32),
    "mobilenetv3_large_reduced": (16,),
    "mobilenetv3_large_cut16": (16,),
    "mobilenetv3_small": (16, 32),
    "mobilenetv3_small_reduced": (16,),
    "mobilenetv3_small_minimal": (16, 32),
    "mobilenetv3_small_minimal_cut16": (16,),
}
# Every output stride some trunk has.
OUTPUT_STRIDES = (32, 16, 8)

# Segmentation heads on a trunk: DeepLabV3+ (deeplab.py; ASPP rates (6, 12, 18) at output stride
# 16, doubled at 8, halved at 32) and LR-ASPP (lraspp.py, MobileNetV3 paper section 6.4).
HEADS = ("deeplabv3plus", "lraspp")

# Where a two-scale model applies softmax and fuses (synergy.py): "input", both scales' maps
# upsampled to the input size first; "decoder", on the high scale's head grid (stride 4 for
# DeepLabV3+, 8 for LR-ASPP), the fused map upsampled once.
FUSE_AT = ("input", "decoder")

# Fusions of the two scales (synergyseg/models/fusion.py); the first is the paper's eq. 1.
FUSIONS = ("uncertainty", "uncertainty_confidence", "low", "high", "average", "max", "attention")
# Those with no weights of their own: an ablation can swap them on one trained model.
WEIGHTLESS_FUSIONS = tuple(name for name in FUSIONS if name != "attention")
# Those that output one scale's map alone (the other scale does not reach the output).
SINGLE_SCALE_FUSIONS = ("low", "high")

# The input's name in every form of a model: the Keras models (SynergySeg, its submodels, the
# MobileNetV3 trunks) and the exported SavedModel, TFLite and ONNX signatures.
INPUT = "images"

# Keys of a SynergySeg model's dict outputs (`scale_outputs=True`).
FUSED = "fused"
S_LO = "s_lo"
S_HI = "s_hi"
UNCERTAINTY = "uncertainty"
SCALE_OUTPUTS = (FUSED, S_LO, S_HI, UNCERTAINTY)
# The outputs that get a loss when the auxiliary loss is on.
LOSS_OUTPUTS = (FUSED, S_LO, S_HI)
