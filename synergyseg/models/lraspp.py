"""LR-ASPP (Howard et al., "Searching for MobileNetV3", ICCV 2019, section 6.4): the light segmentation head."""

import keras
from keras import layers

from synergyseg.models.names import INPUT
from synergyseg.models.resize import ResizeLike
from synergyseg.models.submodel import (SegmentationModel, base_config, building_policy, check_trunk,
                                        trunk_features)
from synergyseg.models.weights import load_backbone_weights

# The grid of LR-ASPP's logits: the trunk's stride-8 skip features.
LOGITS_STRIDE = 8


def lraspp(features, skip, num_classes, filters=128):
    """LR-ASPP logits on the skip's stride-8 grid.

    The deep features go through a 1x1 conv (BN, ReLU) gated per channel by a sigmoid of their
    global average (a 1x1 conv of the mean: a broadcast multiply, no 1x1 map resized), are
    upsampled to the skip's grid and classified by a 1x1 conv; a 1x1 class projection of the skip
    is added. The paper pools with a large stride-(16, 20) kernel at 512x1024 training crops;
    global pooling (as torchvision's LRASPP) takes any input size.
    """
    x = layers.Conv2D(filters, 1, use_bias=False, name="lraspp_conv")(features)
    x = layers.BatchNormalization(name="lraspp_bn")(x)
    x = layers.Activation("relu", name="lraspp_relu")(x)
    gate = layers.GlobalAveragePooling2D(keepdims=True, name="lraspp_pool")(features)
    gate = layers.Conv2D(filters, 1, name="lraspp_gate_conv")(gate)
    gate = layers.Activation("sigmoid", name="lraspp_gate")(gate)
    x = layers.Multiply(name="lraspp_gated")([x, gate])
    x = ResizeLike(name="lraspp_upsample")([x, skip])
    x = layers.Conv2D(num_classes, 1, name="classifier")(x)
    low = layers.Conv2D(num_classes, 1, name="skip_classifier")(skip)
    return layers.Add(name="logits")([x, low])


@keras.saving.register_keras_serializable(package="synergyseg")
class LRASPP(SegmentationModel):
    """LR-ASPP on a trunk, mapping raw RGB images to per-pixel class probabilities at the input size.

    A functional model whose config holds its constructor arguments, so a saved file says what it
    is (`model.backbone_name`, `model.output_stride`, `model.num_classes`; `model.backbone` is
    the trunk model, as in keras-hub), as `DeepLabV3Plus`.

    Args:
        num_classes: number of classes (at least 2).
        backbone: one of `names.BACKBONES`; made for the MobileNetV3 variants (`names.MOBILENETS`).
        output_stride: stride of the trunk's deepest features, of
            `names.BACKBONE_OUTPUT_STRIDES[backbone]` (32 for a whole MobileNetV3, 16 dilated).
        backbone_width: channels of a ResNet trunk's first stage (64 for MobileNetV3).
        head_filters: channels of the gated 1x1 conv (128 in the paper).
        dtype: the dtype policy its layers are built under, e.g. "mixed_float16" (default: the
            global policy then); kept in the config, so the model loads back under it.

    Input `(batch, h, w, 3)` RGB in [0, 255], uint8 or float, any h and w; output
    `(batch, h, w, num_classes)` float32 softmax probabilities. `logits_model()` gives the logits
    on the stride-8 grid instead (for `SynergySeg(fuse_at="decoder")`).

    Example:
        >>> model = LRASPP(num_classes=19, backbone="mobilenetv3_large_cut16")
        >>> probs = model(images)          # (batch, h, w, 19)
    """

    head = "lraspp"  # its name in `names.HEADS`

    def __init__(self, num_classes, backbone="mobilenetv3_large", output_stride=16, backbone_width=64,
                 head_filters=128, name="lraspp", dtype=None, **kwargs):
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        check_trunk("LR-ASPP", backbone, output_stride, backbone_width)
        with building_policy(dtype):
            image = keras.Input((None, None, 3), name=INPUT)
            skip, features = trunk_features(image, backbone, output_stride, backbone_width,
                                            skip_stride=LOGITS_STRIDE)
            super().__init__(image, lraspp(features, skip, num_classes, head_filters), name=name, **kwargs)
        self.num_classes = num_classes
        self.backbone_name = backbone
        self.output_stride = output_stride
        self.backbone_width = backbone_width
        self.head_filters = head_filters

    @property
    def logits_stride(self):
        """Stride of `logits_model()`'s grid."""
        return LOGITS_STRIDE

    def get_config(self):
        return {
            **base_config(self),
            "num_classes": self.num_classes,
            "backbone": self.backbone_name,
            "output_stride": self.output_stride,
            "backbone_width": self.backbone_width,
            "head_filters": self.head_filters,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_lraspp(num_classes, backbone="mobilenetv3_large", output_stride=16, backbone_weights=None, **kwargs):
    """An `LRASPP`, with the trunk's weights read from the local file `backbone_weights`.

    Args:
        backbone_weights: path of a local weights file for the trunk (keras.applications'
            MobileNetV3 "notop" .h5 for the MobileNetV3 variants), or None for random weights.
        num_classes, backbone, output_stride, **kwargs: as in `LRASPP`.
    """
    model = LRASPP(num_classes, backbone=backbone, output_stride=output_stride, **kwargs)
    if backbone_weights is not None:
        load_backbone_weights(model.trunk, backbone, backbone_weights)
    return model
