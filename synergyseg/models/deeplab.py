"""DeepLabV3+ (Chen et al., ECCV 2018) on a dilated ResNet or MobileNetV3 trunk: SynergySeg's submodel."""

import keras
from keras import layers

from synergyseg.models.names import INPUT, MOBILENETS
from synergyseg.models.resize import ResizeLike
from synergyseg.models.submodel import (SegmentationModel, base_config, building_policy, check_trunk,
                                        trunk_features)
from synergyseg.models.weights import load_backbone_weights

# ASPP atrous rates at output stride 16; DeepLabV3 doubles them at output stride 8 (halved at 32).
ASPP_RATES_OS16 = (6, 12, 18)
# Trunks whose head is separable by default: on MobileNetV3-Large (output stride 16) a plain head
# makes the two-scale model ~10x costlier (convolutions at 1024x2048: 609 GFLOPs with 256 plain
# filters and a 48-channel skip, 63 with 128 separable ones and 32, 19 classes; tests/test_realtime.py
# counts both).
SEPARABLE_HEAD_BACKBONES = MOBILENETS
# The grid of DeepLabV3+'s logits: the decoder's stride-4 features.
LOGITS_STRIDE = 4


def _conv_bn_relu(x, filters, kernel_size, name, dilation=1, separable=False):
    if separable and kernel_size > 1:
        # DeepLabV3+'s atrous separable convolution (section 3.2): BN and ReLU after each part.
        x = layers.DepthwiseConv2D(kernel_size, padding="same", dilation_rate=dilation, use_bias=False,
                                   name=f"{name}_depthwise")(x)
        x = layers.BatchNormalization(name=f"{name}_depthwise_bn")(x)
        x = layers.Activation("relu", name=f"{name}_depthwise_relu")(x)
        kernel_size, dilation = 1, 1
    x = layers.Conv2D(
        filters, kernel_size, padding="same", dilation_rate=dilation, use_bias=False, name=f"{name}_conv"
    )(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def aspp(features, filters=256, rates=ASPP_RATES_OS16, dropout=0.1, separable=False):
    """Atrous spatial pyramid pooling: a 1x1 conv, one 3x3 conv per rate and image pooling."""
    branches = [_conv_bn_relu(features, filters, 1, "aspp_1x1")]
    for rate in rates:
        branches.append(
            _conv_bn_relu(features, filters, 3, f"aspp_rate{rate}", dilation=rate, separable=separable))
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name="aspp_pool")(features)
    pooled = _conv_bn_relu(pooled, filters, 1, "aspp_pool_1x1")
    # Resizing a 1x1 map bilinearly is a broadcast to the feature size.
    branches.append(ResizeLike(name="aspp_pool_broadcast")([pooled, features]))
    x = layers.Concatenate(name="aspp_concat")(branches)
    x = _conv_bn_relu(x, filters, 1, "aspp_project")
    return layers.Dropout(dropout, name="aspp_dropout")(x)


def decoder(aspp_features, low_level, filters=256, low_level_filters=48, separable=False):
    """DeepLabV3+ decoder: upsample to stride 4, concatenate 48 projected channels, two 3x3 convs."""
    low = _conv_bn_relu(low_level, low_level_filters, 1, "decoder_low_level")
    x = ResizeLike(name="decoder_upsample")([aspp_features, low])
    x = layers.Concatenate(name="decoder_concat")([x, low])
    x = _conv_bn_relu(x, filters, 3, "decoder_conv1", separable=separable)
    return _conv_bn_relu(x, filters, 3, "decoder_conv2", separable=separable)


@keras.saving.register_keras_serializable(package="synergyseg")
class DeepLabV3Plus(SegmentationModel):
    """DeepLabV3+ mapping raw RGB images to per-pixel class probabilities at the input size.

    A functional model whose config holds its constructor arguments, so a saved file says what it
    is (`model.backbone_name`, `model.output_stride`, `model.num_classes`; `model.backbone` is
    the trunk model, as in keras-hub).

    Args:
        num_classes: number of classes (at least 2).
        backbone: one of `names.BACKBONES`: "resnet50" (the paper's), "resnet101",
            "resnet18"/"resnet34" for quick CPU runs, or a MobileNetV3 variant of
            `names.MOBILENETS` (real-time trunks; ImageNet weights from keras.applications' file).
        output_stride: of `names.BACKBONE_OUTPUT_STRIDES[backbone]`: 16 (default) or 8 for
            ResNets; ASPP rates are (6, 12, 18) at 16, doubled at 8, halved at 32.
        backbone_width: channels of a ResNet trunk's first stage (64 in the real networks);
            MobileNetV3 has its published widths, so it must stay 64.
        head_filters: channels of ASPP and the decoder (256 in the paper).
        low_level_filters: channels of the projected stride-4 features (48 in the paper).
        dropout: dropout after the ASPP projection.
        separable: ASPP's atrous and the decoder's 3x3 convs as depthwise-separable convs (the
            paper's atrous separable convolution, section 3.2); None (default) picks the
            trunk's head: separable for MobileNetV3 (the real-time model), plain for ResNets.
        dtype: the dtype policy its layers are built under, e.g. "mixed_float16" (default: the
            global policy then); kept in the config, so the model loads back under it.

    Input `(batch, h, w, 3)` RGB in [0, 255], uint8 or float, any h and w; output
    `(batch, h, w, num_classes)` float32 softmax probabilities. `logits_model()` gives the logits
    on the decoder's stride-4 grid instead (for `SynergySeg(fuse_at="decoder")`).

    Example:
        >>> model = DeepLabV3Plus(num_classes=19)
        >>> probs = model(images)          # (batch, h, w, 19)
    """

    head = "deeplabv3plus"  # its name in `names.HEADS`

    def __init__(self, num_classes, backbone="resnet50", output_stride=16, backbone_width=64,
                 head_filters=256, low_level_filters=48, dropout=0.1, separable=None,
                 name="deeplabv3plus", dtype=None, **kwargs):
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        check_trunk("DeepLabV3+", backbone, output_stride, backbone_width)

        if separable is None:
            separable = backbone in SEPARABLE_HEAD_BACKBONES
        with building_policy(dtype):
            image = keras.Input((None, None, 3), name=INPUT)
            low_level, features = trunk_features(image, backbone, output_stride, backbone_width, skip_stride=4)

            rates = tuple(r * 16 // output_stride for r in ASPP_RATES_OS16)
            x = aspp(features, head_filters, rates, dropout, separable=separable)
            x = decoder(x, low_level, head_filters, low_level_filters, separable=separable)
            logits = layers.Conv2D(num_classes, 1, name="classifier")(x)
            super().__init__(image, logits, name=name, **kwargs)

        self.num_classes = num_classes
        self.backbone_name = backbone
        self.output_stride = output_stride
        self.backbone_width = backbone_width
        self.head_filters = head_filters
        self.low_level_filters = low_level_filters
        self.dropout = dropout
        self.separable = separable

    @property
    def logits_stride(self):
        """Stride of `logits_model()`'s grid."""
        return LOGITS_STRIDE

    def pooled_context_models(self):
        """Two views of this model (same weights) to run it on tiles with the whole image's context.

        Returns `(with_context, given_context)`: `with_context` maps images to `[probabilities,
        context]`, `context` `(batch, 1, 1, F)` being the ASPP image-pooling branch's mean of the
        trunk's features; `given_context` maps `[images, context]` to probabilities with that
        mean replaced by `context`, so a tile of a large image pools the whole image (used by
        `synergyseg.models.gated`).
        """
        context = self.get_layer("aspp_pool").output
        return (keras.Model(self.inputs, [self.output, context], name=f"{self.name}_with_context"),
                keras.Model([self.inputs[0], context], self.output, name=f"{self.name}_given_context"))

    def get_config(self):
        return {
            **base_config(self),
            "num_classes": self.num_classes,
            "backbone": self.backbone_name,
            "output_stride": self.output_stride,
            "backbone_width": self.backbone_width,
            "head_filters": self.head_filters,
            "low_level_filters": self.low_level_filters,
            "dropout": self.dropout,
            "separable": self.separable,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_deeplabv3plus(num_classes, backbone="resnet50", output_stride=16, backbone_weights=None, **kwargs):
    """A `DeepLabV3Plus`, with the trunk's weights read from the local file `backbone_weights`.

    Args:
        backbone_weights: path of a local weights file for the trunk, e.g. keras.applications'
            ResNet-50 or MobileNetV3-Large ImageNet "notop" .h5, or None for random initialization.
        num_classes, backbone, output_stride, **kwargs: as in `DeepLabV3Plus`.
    """
    model = DeepLabV3Plus(num_classes, backbone=backbone, output_stride=output_stride, **kwargs)
    if backbone_weights is not None:
        load_backbone_weights(model.trunk, backbone, backbone_weights)
    return model
