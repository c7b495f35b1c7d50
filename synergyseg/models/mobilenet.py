"""MobileNetV3 trunks (Howard et al., ICCV 2019) for the real-time heads: Large and Small, whole,
dilated, with the paper's "reduced tail", or cut after stride 16.

Layer names and weight shapes follow `keras.applications.MobileNetV3Large` / `MobileNetV3Small`
(`conv`, `conv_bn`, `expanded_conv_1_expand`, ..., `conv_1`), so the ImageNet "notop" weights that
keras.applications publishes load into every layer a variant keeps (`weights.load_backbone_weights`).
The variants (names in `names.MOBILENETS`):

- "mobilenetv3_large", "mobilenetv3_small": the whole network at output stride 32, or at 16 with
  its last stage dilated (its stride traded for dilation, which changes no weight shape).
- "..._reduced": the last stage dilated and its channels halved (the paper's segmentation setup,
  section 6.4: "reduce the channels in the last block by a factor of 2"), output stride 16. The
  halved layers have no ImageNet weights; they are named `reduced_...` so no file fills them.
- "mobilenetv3_large_cut16": the network up to the stride-16 stage (112 channels), no last stage.
- "mobilenetv3_small_minimal": keras.applications' `MobileNetV3Small(minimalistic=True)` (3x3
  kernels, ReLU, no squeeze-excite), output stride 32 or 16; its own "notop" weight file.
- "mobilenetv3_small_minimal_cut16": that network up to its stride-16 stage (48 channels).

The input normalization (x / 127.5 - 1, keras.applications' `include_preprocessing=True`) is
inside the trunk, so it takes raw RGB in [0, 255]; it is a multiply and an add (no channel
gather: the weights were trained on RGB).
"""

import keras
from keras import layers

from synergyseg.models import names

# keras.applications' MobileNetV3 constants, kept so the ImageNet weights mean the same thing here.
# (Its BatchNorm momentum, 0.999, is not: the moving statistics of a 750-step run would still be
# half their initial values; Keras's 0.99, as in the ResNet trunk, follows them.)
BN_EPSILON = 1e-3
SE_RATIO = 0.25
# Layers a variant changes (the reduced tail) start with this: they have no ImageNet weights.
NOT_PRETRAINED_PREFIX = "reduced_"

# Table 1 (Large) and table 2 (Small) of the paper as keras.applications builds them (alpha=1.0):
# (expansion, filters, kernel, stride, squeeze-excite, activation) per inverted-residual block.
MOBILENETV3_LARGE = (
    (1, 16, 3, 1, False, "relu"),
    (4, 24, 3, 2, False, "relu"),
    (3, 24, 3, 1, False, "relu"),  # stride 4
    (3, 40, 5, 2, True, "relu"),
    (3, 40, 5, 1, True, "relu"),
    (3, 40, 5, 1, True, "relu"),  # stride 8
    (6, 80, 3, 2, False, "hard_swish"),
    (2.5, 80, 3, 1, False, "hard_swish"),
    (2.3, 80, 3, 1, False, "hard_swish"),
    (2.3, 80, 3, 1, False, "hard_swish"),
    (6, 112, 3, 1, True, "hard_swish"),
    (6, 112, 3, 1, True, "hard_swish"),  # stride 16
    (6, 160, 5, 2, True, "hard_swish"),  # the last stage
    (6, 160, 5, 1, True, "hard_swish"),
    (6, 160, 5, 1, True, "hard_swish"),
)
MOBILENETV3_SMALL = (
    (1, 16, 3, 2, True, "relu"),  # stride 4
    (72 / 16, 24, 3, 2, False, "relu"),
    (88 / 24, 24, 3, 1, False, "relu"),  # stride 8
    (4, 40, 5, 2, True, "hard_swish"),
    (6, 40, 5, 1, True, "hard_swish"),
    (6, 40, 5, 1, True, "hard_swish"),
    (3, 48, 5, 1, True, "hard_swish"),
    (3, 48, 5, 1, True, "hard_swish"),  # stride 16
    (6, 96, 5, 2, True, "hard_swish"),  # the last stage
    (6, 96, 5, 1, True, "hard_swish"),
    (6, 96, 5, 1, True, "hard_swish"),
)
# variant: (blocks, index of the last stage's first block, keras.applications constructor).
NETWORKS = {"large": (MOBILENETV3_LARGE, 12, "MobileNetV3Large"),
            "small": (MOBILENETV3_SMALL, 8, "MobileNetV3Small")}
# Each name of `names.MOBILENETS`: (network, tail, minimalistic) with tail "whole", "reduced" or
# "cut16"; minimalistic as keras.applications' `minimalistic=True` (every kernel 3x3, ReLU
# everywhere, no squeeze-excite: fewer passes over the large early maps, faster on CPUs).
MOBILENETS = {
    "mobilenetv3_large": ("large", "whole", False),
    "mobilenetv3_large_reduced": ("large", "reduced", False),
    "mobilenetv3_large_cut16": ("large", "cut16", False),
    "mobilenetv3_small": ("small", "whole", False),
    "mobilenetv3_small_reduced": ("small", "reduced", False),
    "mobilenetv3_small_minimal": ("small", "whole", True),
    "mobilenetv3_small_minimal_cut16": ("small", "cut16", True),
}


def applications_name(backbone):
    """The keras.applications constructor whose weight file a MobileNetV3 variant loads."""
    return NETWORKS[MOBILENETS[backbone][0]][2]


def applications_arguments(backbone):
    """Keyword arguments that constructor needs to read that file (`minimalistic`)."""
    return {"minimalistic": True} if MOBILENETS[backbone][2] else {}


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
    # A broadcast multiply of the (1, 1) gate: no resize of a 1x1 map.
    return layers.Multiply(name=f"{prefix}squeeze_excite_mul")([x, s])


def _inverted_res_block(x, block_id, expansion, filters, kernel, stride, se, activation, dilation,
                        prefix=""):
    """keras.applications' `_inverted_res_block`, with `dilation` on the depthwise conv.

    `prefix` goes before every layer name (`NOT_PRETRAINED_PREFIX` for a reduced block).
    """
    shortcut = x
    in_filters = x.shape[-1]
    prefix += f"expanded_conv_{block_id}_" if block_id else "expanded_conv_"
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
    return x, shortcut, in_filters, prefix


def _project(x, shortcut, in_filters, filters, stride, prefix):
    x = layers.Conv2D(filters, 1, use_bias=False, name=f"{prefix}project")(x)
    x = _batch_norm(x, f"{prefix}project_bn")
    if stride == 1 and in_filters == filters:
        x = layers.Add(name=f"{prefix}add")([shortcut, x])
    return x


def build_mobilenetv3(backbone="mobilenetv3_large", output_stride=16, skip_strides=(4,), name=None):
    """Builds a MobileNetV3 trunk that returns `[features at each of skip_strides..., deepest features]`.

    Args:
        backbone: one of `names.MOBILENETS` (see the module docstring).
        output_stride: stride of the deepest features, one of
            `names.BACKBONE_OUTPUT_STRIDES[backbone]`: 32 (the whole network) or 16 (the last
            stage dilated by 2; the reduced and cut variants are 16 only).
        skip_strides: strides (4, 8 or 16) of the earlier features to return, in that order: the
            last block's output at each (DeepLabV3+ takes stride 4, LR-ASPP stride 8).
        name: model name (default: `backbone`).

    Input `(batch, h, w, 3)` RGB in [0, 255], any h and w; outputs `(batch, ~h/s, ~w/s, c)` for
    each skip stride s and `(batch, ~h/os, ~w/os, c)` for the deepest features (after `conv_1`,
    the last layer of keras.applications' `include_top=False` model, except for "_cut16": the
    stride-16 stage's output); sizes as keras.applications computes them for odd inputs.
    """
    if backbone not in MOBILENETS:
        raise ValueError(f"Unknown MobileNetV3 variant {backbone!r}; expected one of {tuple(MOBILENETS)}")
    allowed = names.BACKBONE_OUTPUT_STRIDES[backbone]
    if output_stride not in allowed:
        raise ValueError(f"{backbone} output_stride must be one of {allowed}, got {output_stride!r}")
    network, tail, minimalistic = MOBILENETS[backbone]
    blocks, last_stage, _ = NETWORKS[network]
    if minimalistic:
        blocks = tuple((e, f, 3, s, False, "relu") for e, f, _, s, _, _ in blocks)
    stem_activation = "relu" if minimalistic else "hard_swish"
    if tail == "cut16":
        blocks = blocks[:last_stage]
    bad = [s for s in skip_strides if s not in (4, 8, 16)]
    if bad:
        raise ValueError(f"skip_strides must be among 4, 8 and 16, got {tuple(skip_strides)}")

    inputs = keras.Input((None, None, 3), name=names.INPUT)
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescaling")(inputs)
    x = layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="conv")(x)
    x = _batch_norm(x, "conv_bn")
    x = _activation(x, stem_activation, f"conv_{stem_activation}")
    stride, skips = 2, {}
    for block_id, (expansion, filters, kernel, block_stride, se, activation) in enumerate(blocks):
        dilation, in_tail = 1, block_id >= last_stage
        if in_tail and output_stride == 16:
            # As in resnet.py: the block that gave up its stride keeps rate 1, the others use 2.
            block_stride, dilation = 1, (1 if block_id == last_stage else 2)
        reduced = in_tail and tail == "reduced"
        if reduced:
            filters //= 2
        # The tail's first block keeps its expand, depthwise and squeeze-excite shapes (its input
        # is the full stride-16 stage); from its projection on, a reduced tail is new.
        renamed = NOT_PRETRAINED_PREFIX if reduced and block_id > last_stage else ""
        x, shortcut, in_filters, prefix = _inverted_res_block(
            x, block_id, expansion, filters, kernel, block_stride, se, activation, dilation, renamed)
        if reduced and block_id == last_stage:
            prefix = NOT_PRETRAINED_PREFIX + prefix
        x = _project(x, shortcut, in_filters, filters, block_stride, prefix)
        stride *= block_stride
        if not in_tail:
            skips[stride] = x
    if tail != "cut16":
        conv_1 = NOT_PRETRAINED_PREFIX + "conv_1" if tail == "reduced" else "conv_1"
        x = layers.Conv2D(_depth(x.shape[-1] * 6), 1, use_bias=False, name=conv_1)(x)
        x = _batch_norm(x, f"{conv_1}_bn")
        x = _activation(x, stem_activation, f"{conv_1}_{stem_activation}")
    return keras.Model(inputs, [skips[s] for s in skip_strides] + [x], name=name or backbone)
