"""What every per-scale model (DeepLabV3+, LR-ASPP) shares: its trunk, and logits at two resolutions.

A per-scale model maps raw RGB images to float32 class probabilities at the input size (its
output, what the "input" fusion of `SynergySeg` reads); `logits_model()` is a view of the same
layers that stops at the head's own grid (stride 4 for DeepLabV3+, 8 for LR-ASPP), before the
upsample and the softmax, for the "decoder" fusion.
"""

import contextlib

import keras
from keras import layers

from synergyseg.models import names
from synergyseg.models.mobilenet import build_mobilenetv3
from synergyseg.models.preprocessing import ImageNetNormalization
from synergyseg.models.resize import ResizeLike
from synergyseg.models.resnet import build_resnet

# The layers every per-scale model names so: its trunk, and the upsample its logits go through.
TRUNK = "backbone"
LOGITS_UPSAMPLE = "logits_upsample"


@contextlib.contextmanager
def building_policy(dtype):
    """Builds the layers made inside under the dtype policy `dtype` (a name, a policy or its
    config; None: the global policy), as a functional model's config cannot pass it to each layer.

    A model built under "mixed_float16" is rebuilt so from its config and its `.keras` file,
    whatever the global policy is then.
    """
    if dtype is None:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(keras.dtype_policies.get(dtype))
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def base_config(model):
    """The config entries every model class here shares: name, trainable and dtype policy."""
    return {"name": model.name, "trainable": model.trainable,
            "dtype": keras.dtype_policies.serialize(model.dtype_policy)}


def check_probability_loss(loss, model_name):
    """Raises ValueError for a loss (or any loss of a dict/list) built with `from_logits=True`:
    these models output softmax probabilities, so such a loss would train on the wrong function."""
    for one in keras.tree.flatten(loss) if loss is not None else ():
        config = one.get_config() if isinstance(one, keras.losses.Loss) else {}
        if config.get("from_logits"):
            raise ValueError(
                f"loss {config.get('name', type(one).__name__)!r} has from_logits=True, but {model_name!r} "
                "outputs softmax probabilities: build the loss with from_logits=False (or leave loss at "
                "'auto' in SynergySeg.compile, the paper's cross-entropy that ignores label 255)")


def check_trunk(head, backbone, output_stride, backbone_width):
    """Raises ValueError naming the argument when `backbone` / `output_stride` / width cannot work."""
    if backbone not in names.BACKBONES:
        raise ValueError(f"Unknown backbone {backbone!r}; expected one of {names.BACKBONES}")
    allowed = names.BACKBONE_OUTPUT_STRIDES[backbone]
    if output_stride not in allowed:
        strides = " or ".join(map(str, sorted(allowed)))
        only = " only" if len(allowed) == 1 else ""
        raise ValueError(f"{head} output_stride must be {strides}{only} with backbone={backbone!r}, "
                         f"got {output_stride!r}")
    if backbone in names.MOBILENETS and backbone_width != 64:
        raise ValueError(
            f"backbone_width={backbone_width!r} applies to ResNet trunks only; {backbone!r} has its "
            "published widths (leave backbone_width at 64)")


def trunk_features(image, backbone, output_stride, backbone_width, skip_stride):
    """`[skip features, deepest features]` of the trunk `backbone` (a nested model named TRUNK) on raw RGB.

    ResNets get keras.applications' ImageNet normalization first (RGB -> BGR, mean subtracted);
    MobileNetV3 normalizes itself (x / 127.5 - 1), as keras.applications' does.
    """
    if backbone in names.MOBILENETS:
        trunk = build_mobilenetv3(backbone, output_stride=output_stride, skip_strides=(skip_stride,),
                                  name=TRUNK)
        return trunk(image)
    x = ImageNetNormalization(name="imagenet_normalization")(image)
    trunk = build_resnet(backbone, output_stride=output_stride, width=backbone_width,
                         skip_strides=(skip_stride,), name=TRUNK)
    return trunk(x)


class SegmentationModel(keras.Model):
    """Base of the per-scale models: `image` -> softmax of `logits` upsampled to the input size.

    Subclasses build `logits` (any grid) from the `image` input and call this constructor; their
    config holds their plain arguments.
    """

    def __init__(self, image, logits, **kwargs):
        # Upsample logits (not probabilities) to the input size, then softmax in float32 so mixed
        # precision never feeds half-precision probabilities to the loss.
        logits = ResizeLike(name=LOGITS_UPSAMPLE)([logits, image])
        probs = layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
        super().__init__(image, probs, **kwargs)

    def compile(self, optimizer="rmsprop", loss=None, **kwargs):
        """`keras.Model.compile`; a loss on logits (`from_logits=True`) is refused (outputs are probabilities)."""
        check_probability_loss(loss, self.name)
        super().compile(optimizer=optimizer, loss=loss, **kwargs)

    @property
    def min_input_size(self):
        """The smallest height and width this model takes: a MobileNetV3 trunk's "valid" stride-2
        convolutions leave no pixel below its output stride minus one (measured on every
        MobileNetV3 trunk in tests/test_keras_contract.py); a ResNet takes any size."""
        backbone = getattr(self, "backbone_name", None)
        return self.output_stride - 1 if backbone in names.MOBILENETS else 1

    @property
    def trunk(self):
        """The trunk (a nested model whose weights load from keras.applications files)."""
        return self.get_layer(TRUNK)

    @property
    def backbone(self):
        """The trunk model, under keras-hub's name: `model.backbone.trainable = False` freezes it
        (compile again after). Its name in `names.BACKBONES` is `backbone_name`."""
        return self.trunk

    def logits_model(self):
        """A view of this model (same layers and weights): images -> logits on the head's grid.

        The output is `(batch, ~h/s, ~w/s, num_classes)` in the compute dtype, `s` the head's
        output stride (`logits_stride`), before the upsample and softmax the model itself applies.
        """
        logits = self.get_layer(LOGITS_UPSAMPLE).input[0]
        return keras.Model(self.inputs, logits, name=f"{self.name}_logits")
