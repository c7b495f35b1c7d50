"""ResNet trunks (ResNet-18/34/50/101) with dilation for DeepLabV3+.

Layer names and weight shapes follow `keras.applications.ResNet50` (`conv1_conv`,
`conv2_block1_0_conv`, ..., `conv5_block3_out`), so the standard ImageNet "notop" weights load into
the bottleneck trunks by name; dilation does not change any weight shape. Like torchvision's
`replace_stride_with_dilation` and slim's `output_stride`, a stage that trades its stride for
dilation keeps the previous rate in its first block and uses the new rate in the others.
"""

import dataclasses

import keras
from keras import layers

# keras.applications' ResNet constants, kept so the ImageNet weights mean the same thing here.
BN_EPSILON = 1.001e-5


@dataclasses.dataclass(frozen=True)
class ResNetSpec:
    """Block type and blocks per stage (conv2..conv5) of one ResNet depth."""

    bottleneck: bool
    blocks: tuple


RESNETS = {
    "resnet18": ResNetSpec(bottleneck=False, blocks=(2, 2, 2, 2)),
    "resnet34": ResNetSpec(bottleneck=False, blocks=(3, 4, 6, 3)),
    "resnet50": ResNetSpec(bottleneck=True, blocks=(3, 4, 6, 3)),
    "resnet101": ResNetSpec(bottleneck=True, blocks=(3, 4, 23, 3)),
}

# Dilation of conv4 and conv5 for each output stride (DeepLabV3+: OS 16 dilates conv5, OS 8 both).
STAGE_DILATIONS = {32: (1, 1), 16: (1, 2), 8: (2, 4)}


def _conv_bn(x, filters, kernel_size, name, strides=1, dilation=1, relu=True):
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="valid" if kernel_size == 1 else "same",
        dilation_rate=dilation,
        name=f"{name}_conv",
    )(x)
    x = layers.BatchNormalization(axis=-1, epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    if relu:
        x = layers.Activation("relu", name=f"{name}_relu")(x)
    return x


def _bottleneck_block(x, filters, stride, dilation, shortcut_conv, name):
    """keras.applications' `residual_block_v1`, with `stride` or `dilation` on the 3x3 path."""
    if shortcut_conv:
        shortcut = _conv_bn(x, 4 * filters, 1, f"{name}_0", strides=stride, relu=False)
    else:
        shortcut = x
    # keras.applications puts the stride on the first 1x1 conv (ResNet v1), not on the 3x3.
    y = _conv_bn(x, filters, 1, f"{name}_1", strides=stride)
    y = _conv_bn(y, filters, 3, f"{name}_2", dilation=dilation)
    y = _conv_bn(y, 4 * filters, 1, f"{name}_3", relu=False)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.Activation("relu", name=f"{name}_out")(y)


def _basic_block(x, filters, stride, dilation, shortcut_conv, name):
    """The two-3x3 block of ResNet-18/34."""
    if shortcut_conv:
        shortcut = _conv_bn(x, filters, 1, f"{name}_0", strides=stride, relu=False)
    else:
        shortcut = x
    y = _conv_bn(x, filters, 3, f"{name}_1", strides=stride, dilation=dilation)
    y = _conv_bn(y, filters, 3, f"{name}_2", dilation=dilation, relu=False)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.Activation("relu", name=f"{name}_out")(y)


def build_resnet(depth="resnet50", output_stride=16, width=64, skip_strides=(4,), name=None):
    """Builds a ResNet trunk that returns `[features at each of skip_strides..., final features]`.

    Args:
        depth: one of `RESNETS` ("resnet18", "resnet34", "resnet50", "resnet101").
        output_stride: 32 (plain ResNet), 16 (conv5 dilated by 2, DeepLabV3+'s default) or 8
            (conv4 dilated by 2, conv5 by 4).
        width: channels of the first stage; 64 for the real networks, smaller for quick tests.
        skip_strides: strides (4 or 8) of the earlier features to return, in that order: the last
            block's output at each (conv2 at 4; conv3 at 8, or conv4 at output stride 8).
        name: model name, `depth` by default.

    Input `(batch, h, w, 3)` normalized images; outputs (with the default skip stride 4)
    `(batch, ceil(h/4), ceil(w/4), c2)` and
    `(batch, ceil(h/os), ceil(w/os), c5)`, with c5 = 32 * width (bottleneck) or 8 * width (basic).
    """
    if depth not in RESNETS:
        raise ValueError(f"Unknown backbone {depth!r}; expected one of {sorted(RESNETS)}")
    if output_stride not in STAGE_DILATIONS:
        raise ValueError(f"output_stride must be one of {sorted(STAGE_DILATIONS)}, got {output_stride!r}")
    spec = RESNETS[depth]
    block = _bottleneck_block if spec.bottleneck else _basic_block

    inputs = keras.Input((None, None, 3), name="normalized_image")
    x = layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
    x = layers.Conv2D(width, 7, strides=2, name="conv1_conv")(x)
    x = layers.BatchNormalization(axis=-1, epsilon=BN_EPSILON, name="conv1_bn")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)

    # (stage, filters, stride, dilation) for conv2..conv5.
    d4, d5 = STAGE_DILATIONS[output_stride]
    stages = [
        (2, width, 1, 1),
        (3, 2 * width, 2, 1),
        (4, 4 * width, 1 if d4 > 1 else 2, d4),
        (5, 8 * width, 1 if d5 > 1 else 2, d5),
    ]
    bad = [s for s in skip_strides if s not in (4, 8)]
    if bad:
        raise ValueError(f"skip_strides must be among 4 and 8, got {tuple(skip_strides)}")
    previous_dilation, total_stride, skips = 1, 4, {}  # stride 4 after the max pooling
    for (stage, filters, stride, dilation), num_blocks in zip(stages, spec.blocks):
        for i in range(1, num_blocks + 1):
            first = i == 1
            x = block(
                x,
                filters,
                stride=stride if first else 1,
                dilation=previous_dilation if first else dilation,
                # Bottleneck stages always widen in block 1; basic stages only when they stride.
                shortcut_conv=first and (spec.bottleneck or stage > 2),
                name=f"conv{stage}_block{i}",
            )
        previous_dilation = dilation
        total_stride *= stride
        if stage < 5:
            skips[total_stride] = x
    return keras.Model(inputs, [skips[s] for s in skip_strides] + [x], name=name or depth)
