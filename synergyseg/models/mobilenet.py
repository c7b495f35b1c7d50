"""MobileNetV3-Large trunk (Howard et al., ICCV 2019) for the real-time DeepLabV3+.

Layer names and weight shapes follow `keras.applications.MobileNetV3Large` (`conv`, `conv_bn`,
`expanded_conv_1_expand`, ..., `conv_1`), so the ImageNet "notop" weights that keras.applications
publishes load into it by name (`weights.load_backbone_weights`). Like the paper's segmentation
setup (LR-ASPP, section 6.4) the last stage trades its stride for dilation at output stride 16,
which changes no weight shape. The input normalization (x / 127.5 - 1, keras.applications'
`include_preprocessing=True`) is inside the trunk, so it takes raw RGB in [0, 255].
"""

import keras
from keras import layers

# keras.applications' MobileNetV3 constants, kept so the ImageNet weights mean the same thing here.
# (Its BatchNorm momentum, 0.999, is not: the moving statistics of a 750-step run would still be
# half their initial values; Keras's 0.99, as in the ResNet trunk, follows them.)
BN_EPSILON = 1e-3
SE_RATIO = 0.25

# MobileNetV3-Large, table 1 of the paper, as keras.applications builds it (alpha=1.0):
# (expansion, filters, kernel, stride, squeeze-excite, activation) per inverted-residual block.
MOBILENETV3_LARGE = (
    (1, 16, 3, 1, False, "relu"),
    (4, 24, 3, 2, False, "relu"),
    (3, 24, 3, 1, False, "relu"),  # its output is the stride-4 (low-level) feature map
    (3, 40, 5, 2, True, "relu"),
    (3, 40, 5, 1, True, "relu"),
    (3, 40, 5, 1, True, "relu"),
    (6, 80, 3, 2, False, "hard_swish"),
    (2.5, 80, 3, 1, False, "hard_swish"),
    (2.3, 80, 3, 1, False, "hard_swish"),
    (2.3, 80, 3, 1, False, "hard_swish"),
    (6, 112, 3, 1, True, "hard_swish"),
    (6, 112, 3, 1, True, "hard_swish"),
    (6, 160, 5, 2, True, "hard_swish"),  # the last stage: dilated instead at output stride 16
    (6, 160, 5, 1, True, "hard_swish"),
    (6, 160, 5, 1, True, "hard_swish"),
)
LOW_LEVEL_BLOCK = 2
LAST_STAGE_BLOCK = 12
OUTPUT_STRIDES = (32, 16)


def _depth(value, divisor=8):
    """Channels rounded to a multiple of 8, never more than 10% down (keras.applications' rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _batch_norm(x, name):
    return layers.BatchNormalization(epsilon=BN_EPSILON, name=name)(x)


def _activation(x, kind, name):
    return layers.Activation(kind, name=name)(x)


def _squeeze_excite(x, filters, prefix):
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{prefix}squeeze_excite_avg_pool")(x)
    s = layers.Conv2D(_depth(filters * SE_RATIO), 1, name=f"{prefix}squeeze_excite_conv")(s)
    s = layers.ReLU(name=f"{prefix}squeeze_excite_relu")(s)
    s = layers.Conv2D(filters, 1, name=f"{prefix}squeeze_excite_conv_1")(s)
    # keras.applications' relu6(x + 3) / 6 is exactly keras' hard_sigmoid.
    s = layers.Activation("hard_sigmoid", name=f"{prefix}squeeze_excite_gate")(s)
    return layers.Multiply(name=f"{prefix}squeeze_excite_mul")([x, s])


def _inverted_res_block(x, block_id, expansion, filters, kernel, stride, se, activation, dilation):
    """keras.applications' `_inverted_res_block`, with `dilation` on the depthwise conv."""
    shortcut = x
    in_filters = x.shape[-1]
    prefix = f"expanded_conv_{block_id}_" if block_id else "expanded_conv_"
    if block_id:
        x = layers.Conv2D(_depth(in_filters * expansion), 1, use_bias=False, name=f"{prefix}expand")(x)
        x = _batch_norm(x, f"{prefix}expand_bn")
        x = _activation(x, activation, f"{prefix}expand_{activation}")
    if stride == 2:
        # keras.applications' `correct_pad` for an unknown input size: (k//2 - 1, k//2) on each
        # axis, so n // 2 outputs (odd sizes lose their last row or column, as there).
        x = layers.ZeroPadding2D(((kernel // 2 - 1, kernel // 2),) * 2, name=f"{prefix}depthwise_pad")(x)
    x = layers.DepthwiseConv2D(kernel, strides=stride, padding="valid" if stride == 2 else "same",
                               dilation_rate=dilation, use_bias=False, name=f"{prefix}depthwise")(x)
    x = _batch_norm(x, f"{prefix}depthwise_bn")
    x = _activation(x, activation, f"{prefix}depthwise_{activation}")
    if se:
        x = _squeeze_excite(x, _depth(in_filters * expansion), prefix)
    x = layers.Conv2D(filters, 1, use_bias=False, name=f"{prefix}project")(x)
    x = _batch_norm(x, f"{prefix}project_bn")
    if stride == 1 and in_filters == filters:
        x = layers.Add(name=f"{prefix}add")([shortcut, x])
    return x


def build_mobilenetv3_large(output_stride=16, name="mobilenetv3_large"):
    """Builds a MobileNetV3-Large trunk that returns `[stride-4 features, final features]`.

    Args:
        output_stride: 32 (keras.applications' network) or 16 (the last stage dilated by 2).
        name: model name.

    Input `(batch, h, w, 3)` RGB in [0, 255], any h and w; outputs `(batch, ~h/4, ~w/4, 24)` and
    `(batch, ~h/os, ~w/os, 960)` (after `conv_1`, the last layer of keras.applications'
    `include_top=False` model); sizes as keras.applications computes them for odd inputs.
    """
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"MobileNetV3 output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}")
    inputs = keras.Input((None, None, 3), name="image")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescaling")(inputs)
    x = layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="conv")(x)
    x = _batch_norm(x, "conv_bn")
    x = _activation(x, "hard_swish", "conv_hard_swish")
    low_level = None
    for block_id, (expansion, filters, kernel, stride, se, activation) in enumerate(MOBILENETV3_LARGE):
        dilation = 1
        if output_stride == 16 and block_id >= LAST_STAGE_BLOCK:
            # As in resnet.py: the block that gave up its stride keeps rate 1, the others use 2.
            stride, dilation = 1, (1 if block_id == LAST_STAGE_BLOCK else 2)
        x = _inverted_res_block(x, block_id, expansion, filters, kernel, stride, se, activation, dilation)
        if block_id == LOW_LEVEL_BLOCK:
            low_level = x
    x = layers.Conv2D(_depth(x.shape[-1] * 6), 1, use_bias=False, name="conv_1")(x)
    x = _batch_norm(x, "conv_1_bn")
    x = _activation(x, "hard_swish", "conv_1_hard_swish")
    return keras.Model(inputs, [low_level, x], name=name)
