"""The two-scale SynergySeg model: one shared submodel (DeepLabV3+ or LR-ASPP) on the full and the
half-resolution image, fused at the input size or on the head's grid."""

import keras

from synergyseg.models.deeplab import build_deeplabv3plus
from synergyseg.models.fusion import HighScaleOnly, UncertaintyMask, _Fusion, fusion_name, make_fusion
from synergyseg.models.lraspp import build_lraspp
from synergyseg.models.names import FUSE_AT, FUSED, HEADS, INPUT, S_HI, S_LO, UNCERTAINTY
from synergyseg.models.resize import Downsample, ResizeLike
from synergyseg.models.submodel import base_config, building_policy, check_probability_loss

# With fuse_at="decoder": the layer that upsamples the fused map from the head's grid.
FUSED_UPSAMPLE = "fused_upsample"


@keras.saving.register_keras_serializable(package="synergyseg")
class SynergySeg(keras.Model):
    """The paper's model: a shared segmentation submodel at scales 1.0 and 0.5, merged by a fusion.

    A functional model (as keras-hub's task classes) whose config holds the submodel, the fusion,
    where it fuses and the class names, so a loaded file says what it is: `model.backbone_name`,
    `model.head`, `model.fusion_name`, `model.fuse_at`, `model.num_classes`, `model.class_names`.
    `model.backbone` is the trunk model both scales share, as keras-hub's `task.backbone`:
    `model.backbone.trainable = False` freezes it for fine-tuning (then compile).

    Args:
        submodel: the shared per-scale model, a `DeepLabV3Plus` or `LRASPP`; maps `(batch, h, w,
            3)` RGB in [0, 255] to `(batch, h, w, C)` probabilities.
        fusion: a name of `names.FUSIONS` ("uncertainty" is eq. 1) or a fusion layer (reused
            with its weights, as `with_fusion` does).
        scale_outputs: if True, the model returns a dict with "fused", "s_lo" (the low scale's
            prediction upsampled to the input size), "s_hi" and "uncertainty" (`U(1 - max_c S_lo)`),
            for auxiliary losses, ablations and pictures; otherwise only the fused map.
        class_names, palette: the dataset's class names and RGB colours (travel with the model).
        dtype: the dtype policy of its own layers (the submodel has its own), e.g. "mixed_float16";
            default: the global policy then. Kept in the config.
        fuse_at: where softmax and the fusion run (`names.FUSE_AT`). "input": each scale's
            probabilities at its input size (the submodel's output), the low scale's upsampled 2x
            by the fusion. "decoder": each scale's logits on its head's grid (`logits_model()`:
            stride 4 for DeepLabV3+, 8 for LR-ASPP), the low scale's resized to the high scale's
            grid, softmax and the fusion there, and the fused map (and "s_lo", "s_hi",
            "uncertainty") upsampled once to the input size: 1/16 (1/64) of the fusion's work.

    Input `(batch, h, w, 3)` RGB in [0, 255], any h and w (odd too); output `(batch, h, w,
    num_classes)` float32 probabilities (or the dict above), at the input size either way.

    Example:
        >>> model = build_synergyseg(num_classes=19)
        >>> model.compile()                # the paper's recipe
        >>> model.fit(train_ds, epochs=150)
    """

    def __init__(self, submodel, fusion="uncertainty", scale_outputs=False, class_names=None,
                 palette=None, fuse_at="input", name="synergyseg", dtype=None, **kwargs):
        fuse = make_fusion(fusion) if isinstance(fusion, str) else fusion
        if not isinstance(fuse, _Fusion):
            raise ValueError(f"fusion must be a fusion name or layer, got {fusion!r}")
        if fuse_at not in FUSE_AT:
            raise ValueError(f"fuse_at must be one of {FUSE_AT}, got {fuse_at!r}")
        if fuse_at == "decoder" and not hasattr(submodel, "logits_model"):
            raise ValueError(f"fuse_at='decoder' needs a submodel with logits_model() (DeepLabV3Plus, "
                             f"LRASPP); {type(submodel).__name__} has none: use fuse_at='input'")
        # The single-scale model: nothing reads the low scale, so it is not computed (its forward
        # pass would still move BatchNorm's statistics while training).
        single = isinstance(fuse, HighScaleOnly) and not scale_outputs
        with building_policy(dtype):
            image = keras.Input((None, None, 3), name=INPUT)
            if fuse_at == "input":
                outputs = _fused_at_input(submodel, fuse, image, single, scale_outputs)
            else:
                outputs = _fused_at_decoder(submodel.logits_model(), fuse, image, single, scale_outputs)
            super().__init__(image, outputs, name=name, **kwargs)

        self.submodel = submodel
        self.fusion = fuse
        self.scale_outputs = bool(scale_outputs)
        self.fuse_at = fuse_at
        self._single = single
        num_classes = submodel.output.shape[-1]
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class_names for a model of {num_classes} classes")
        if palette is not None and len(palette) != num_classes:
            raise ValueError(f"{len(palette)} palette colours for a model of {num_classes} classes")
        self.class_names = list(class_names) if class_names is not None else None
        self.palette = [list(map(int, c)) for c in palette] if palette is not None else None

    @property
    def num_classes(self):
        return int(self.submodel.output.shape[-1])

    @property
    def fusion_name(self):
        """The fusion's name in `names.FUSIONS`."""
        return fusion_name(self.fusion)

    @property
    def head(self):
        """The submodel's head name in `names.HEADS` (None for a submodel of another kind)."""
        return getattr(self.submodel, "head", None)

    @property
    def backbone(self):
        """The trunk model both scales share (keras-hub's `task.backbone`; None for a submodel without one)."""
        return getattr(self.submodel, "backbone", None)

    @property
    def backbone_name(self):
        """The trunk's name in `names.BACKBONES` (None for a submodel that does not say)."""
        return getattr(self.submodel, "backbone_name", None)

    @property
    def output_stride(self):
        return getattr(self.submodel, "output_stride", None)

    @property
    def min_input_size(self):
        """The smallest height and width this model takes: the submodel's, or with the
        half-resolution branch (it sees `ceil(side / 2)`) the smallest side whose half is the
        submodel's."""
        smallest = getattr(self.submodel, "min_input_size", 1)
        return smallest if self._single else 2 * smallest - 1

    def check_input_size(self, shape):
        """Raises ValueError if `shape` `(batch, h, w, 3)` has a known height or width below
        `min_input_size` (below it a MobileNetV3 trunk fails deep inside or returns NaN)."""
        height, width = tuple(shape)[1:3]
        if any(isinstance(s, int) and s < self.min_input_size for s in (height, width)):
            raise ValueError(
                f"{self.name} takes images of at least {self.min_input_size}x{self.min_input_size} "
                f"pixels ({self.backbone_name} at output stride {self.output_stride}"
                f"{', two scales' if not self._single else ''}); got {height}x{width}: "
                "resize or pad the image first")

    def call(self, inputs, training=None, mask=None):
        # Where the size is known: eager calls, and the first trace of fit/predict on fixed sizes.
        self.check_input_size(getattr(inputs, "shape", (None,) * 4))
        return super().call(inputs, training=training, mask=mask)

    def predict(self, x, *args, **kwargs):
        # Keras retraces a second predict with unknown sizes, where call cannot see them.
        spec = getattr(x, "element_spec", None)
        shape = getattr(spec[0] if isinstance(spec, tuple) else spec, "shape", None) or getattr(x, "shape", None)
        if shape is not None and len(shape) == 4:
            self.check_input_size(tuple(shape))
        return super().predict(x, *args, **kwargs)

    def with_fusion(self, fusion=None, scale_outputs=False, fuse_at=None):
        """A SynergySeg that shares these weights, with another fusion (name), resolution or extra outputs.

        Nothing is copied or retrained: the new model calls the same submodel instance, so an
        ablation can compare fusions (or `fuse_at` "input" and "decoder") on one set of trained
        weights. `fusion=None` keeps this model's fusion layer (and its weights, for "attention");
        `fuse_at=None` keeps this model's.
        """
        return SynergySeg(self.submodel, fusion if fusion is not None else self.fusion,
                          scale_outputs=scale_outputs, class_names=self.class_names,
                          palette=self.palette, fuse_at=fuse_at or self.fuse_at, name=self.name,
                          dtype=self.dtype_policy)

    def fused_on_grid(self):
        """A view of this model (same layers and weights): images -> the fused probabilities on the
        head's grid, before their one upsample (`fuse_at="decoder"` only).

        Output `(batch, ~h/s, ~w/s, num_classes)` float32, `s` the head's logits stride. The
        exported class map can take its argmax there or at a few times that size
        (`export.build_serving_model(class_map_stride=...)`) instead of on the full-size map.
        """
        if self.fuse_at != "decoder":
            raise ValueError(f"fused_on_grid() needs a model fused at the decoder; {self.name} fuses "
                             "at the input size (its fused map exists only there): use "
                             "with_fusion(fuse_at='decoder') on a submodel with logits_model()")
        fused = self.get_layer(FUSED_UPSAMPLE).input[0]
        return keras.Model(self.inputs, fused, name=f"{self.name}_fused_on_grid")

    def compile(self, optimizer="auto", loss="auto", metrics="auto", decay_steps=None, **kwargs):
        """Compiles with the paper's recipe for each argument left at "auto".

        "auto" means: SGD with momentum 0.9 and weight decay 5e-4, learning rate 0.01 with
        polynomial decay (power 0.9) to 0 over `decay_steps` steps (default: what the next `fit`
        runs, its epochs times Keras's own count of its steps per epoch; saved with the model,
        unset until then), cross-entropy and mean IoU that ignore label 255. The dict-output model
        (`scale_outputs=True`) gets the loss on "fused" only. The outputs are probabilities: a loss
        built with `from_logits=True` is refused.
        """
        # The recipe lives with the training run; imported here so the model module stays below it.
        from synergyseg.training.recipe import paper_compile_arguments

        auto, _ = paper_compile_arguments(self.num_classes, decay_steps, dict_outputs=self.scale_outputs)
        loss = auto["loss"] if loss == "auto" else loss
        check_probability_loss(loss, self.name)
        super().compile(
            optimizer=auto["optimizer"] if optimizer == "auto" else optimizer,
            loss=loss,
            metrics=auto["metrics"] if metrics == "auto" else metrics,
            **kwargs,
        )

    def fit(self, x=None, y=None, epochs=1, callbacks=None, initial_epoch=0, **kwargs):
        """`keras.Model.fit`, kept inside the optimizer's polynomial decay (`WarmupPolynomialDecay`).

        A decay without a length (`compile()` without decay_steps) gets this fit's: epochs times
        the steps per epoch Keras counts for `x`. A fit that would run past the decay's end (a
        second fit after a finished one) is refused, saying how to go on.
        """
        from synergyseg.training.schedules import DecayLength, decay_schedule

        schedule = decay_schedule(self.optimizer) if self.compiled else None
        if schedule is not None:
            if isinstance(callbacks, keras.callbacks.CallbackList):
                raise ValueError("SynergySeg.fit takes callbacks as a list (it adds the decay's check)")
            # Last: after callbacks that restore a run in on_train_begin (BackupAndRestore).
            callbacks = list(callbacks or []) + [DecayLength(schedule, initial_epoch)]
        return super().fit(x, y, epochs=epochs, callbacks=callbacks, initial_epoch=initial_epoch, **kwargs)

    def compile_from_config(self, config):
        """Restores a saved compile (optimizer state included) as saved, not with the "auto" defaults."""
        keras.Model.compile(self, **keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def get_config(self):
        return {**two_scale_config(self), "fuse_at": self.fuse_at}

    @classmethod
    def from_config(cls, config):
        return cls(**two_scale_parts(config))


def _fused_at_input(submodel, fuse, image, single, scale_outputs):
    """Eq. 1 at the input size: each scale's probabilities at its input size, U = 2x upsample."""
    s_hi = submodel(image)
    s_lo = s_hi if single else submodel(Downsample(2, name="half_resolution")(image))
    fused = fuse([s_lo, s_hi])
    if not scale_outputs:
        return fused
    return {
        FUSED: fused,
        S_LO: ResizeLike(name="s_lo_upsample", dtype="float32")([s_lo, image]),
        S_HI: s_hi,
        UNCERTAINTY: UncertaintyMask(name="uncertainty")([s_lo, image]),
    }


def _fused_at_decoder(logits_model, fuse, image, single, scale_outputs):
    """Eq. 1 on the high scale's head grid: the low scale's logits resized there, softmax and the
    fusion there (its U is then the identity), one upsample of the result to the input size."""
    z_hi = logits_model(image)
    if single:
        z_lo = z_hi
    else:
        z_lo = logits_model(Downsample(2, name="half_resolution")(image))
        z_lo = ResizeLike(name="s_lo_to_decoder_grid")([z_lo, z_hi])
    # Softmax in float32, as the submodel's own output (mixed precision never feeds the fusion halves).
    s_hi = keras.layers.Activation("softmax", dtype="float32", name="s_hi_probabilities")(z_hi)
    s_lo = s_hi if single else keras.layers.Activation(
        "softmax", dtype="float32", name="s_lo_probabilities")(z_lo)
    fused = ResizeLike(name=FUSED_UPSAMPLE, dtype="float32")([fuse([s_lo, s_hi]), image])
    if not scale_outputs:
        return fused
    return {
        FUSED: fused,
        S_LO: ResizeLike(name="s_lo_upsample", dtype="float32")([s_lo, image]),
        S_HI: ResizeLike(name="s_hi_upsample", dtype="float32")([s_hi, image]),
        UNCERTAINTY: UncertaintyMask(name="uncertainty")([s_lo, image]),
    }


def two_scale_config(model):
    """The config entries every two-scale model shares: its submodel and fusion (serialized),
    outputs, class names and palette (`SynergySeg`, `GatedSynergySeg`)."""
    return {
        **base_config(model),
        "submodel": keras.saving.serialize_keras_object(model.submodel),
        "fusion": keras.saving.serialize_keras_object(model.fusion),
        "scale_outputs": model.scale_outputs,
        "class_names": model.class_names,
        "palette": model.palette,
    }


def two_scale_parts(config):
    """`config` with its submodel and fusion deserialized, ready for the constructor."""
    config = dict(config)
    config["submodel"] = keras.saving.deserialize_keras_object(config["submodel"])
    config["fusion"] = keras.saving.deserialize_keras_object(config["fusion"])
    return config


def build_synergyseg(
    num_classes,
    backbone="resnet50",
    output_stride=16,
    fusion="uncertainty",
    backbone_weights=None,
    scale_outputs=False,
    class_names=None,
    palette=None,
    name="synergyseg",
    head="deeplabv3plus",
    fuse_at="input",
    **head_kwargs,
):
    """Builds the paper's model: a shared submodel at scales 1.0 and 0.5, merged by `fusion`.

    Args:
        num_classes: number of classes (at least 2).
        backbone, output_stride, backbone_weights: as in `build_deeplabv3plus` / `build_lraspp`.
        fusion: "uncertainty" (eq. 1, default), "uncertainty_confidence", "low", "high",
            "average", "max" or "attention" (see `synergyseg.models.fusion`).
        scale_outputs, class_names, palette, fuse_at: as in `SynergySeg`.
        head: the submodel, one of `names.HEADS`: "deeplabv3plus" (the paper's) or "lraspp".
        **head_kwargs: passed to `build_deeplabv3plus` (backbone_width, head_filters,
            low_level_filters, dropout, separable) or `build_lraspp` (backbone_width, head_filters).

    Example:
        >>> model = build_synergyseg(num_classes=19)
        >>> fast = build_synergyseg(19, backbone="mobilenetv3_large_cut16", head="lraspp", fuse_at="decoder")
    """
    if head not in HEADS:
        raise ValueError(f"Unknown head {head!r}; expected one of {HEADS}")
    fuse = make_fusion(fusion)
    build = build_lraspp if head == "lraspp" else build_deeplabv3plus
    submodel = build(num_classes, backbone=backbone, output_stride=output_stride,
                     backbone_weights=backbone_weights, **head_kwargs)
    return SynergySeg(submodel, fuse, scale_outputs=scale_outputs, class_names=class_names,
                      palette=palette, fuse_at=fuse_at, name=name)


def as_synergyseg(model, source="model"):
    """`model` as a `SynergySeg`: itself, or a `.keras` file's model saved by an older
    `build_synergyseg` (a plain functional model), rebuilt around the same layers and weights.

    Raises ValueError naming `source` when `model` is not a two-scale model.
    """
    if isinstance(model, SynergySeg):
        return model
    # Files saved before the SynergySeg class hold a functional model: its one nested model is the
    # shared submodel and its fusion layer is named "fusion". Only this conversion looks by name.
    submodels = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    fusions = [layer for layer in model.layers if isinstance(layer, _Fusion)]
    if len(submodels) != 1 or len(fusions) != 1:
        raise ValueError(
            f"{source} is not a SynergySeg model: expected one shared submodel and one fusion layer, "
            f"found {len(submodels)} and {len(fusions)}")
    return SynergySeg(submodels[0], fusions[0], scale_outputs=isinstance(model.output, dict), name=model.name,
                      dtype=model.dtype_policy)


def with_fusion(model, fusion=None, scale_outputs=False, fuse_at=None):
    """`model.with_fusion(...)` for any SynergySeg model, including one saved by an older version."""
    return as_synergyseg(model).with_fusion(fusion, scale_outputs, fuse_at)


def submodel_of(model):
    """The shared submodel inside a SynergySeg model (to run it alone or swap fusions)."""
    return as_synergyseg(model).submodel
