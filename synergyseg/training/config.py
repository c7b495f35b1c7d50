"""One run's configuration (`RunConfig`), the named presets, and the dataset each run reads.

    config = preset("cityscapes", data_dir="data/cityscapes", batch_size=4)
    config.to_json("runs/x/config.json")
    same = RunConfig.from_json("runs/x/config.json")
"""

import dataclasses
import json
import os

from synergyseg.atomic import write_json
from synergyseg.data import info as data_info
from synergyseg.models import names

STRATEGIES = ("auto", "mirrored", "multiworker", "one")
# The default per-scale auxiliary loss weight of two-scale training. The fusion study (README,
# "Does training through eq. 1 pay?"; BENCHMARKS.md "Fusion study") measured eq. 1 trained with it
# ahead of the single-scale model in every seed of both regimes (+2.3 +- 1.2 mIoU, 3 seeds, and
# +2.3 +- 1.4, 5 seeds), and eq. 1 with the fused loss alone (the paper's recipe) tied or behind it.
AUX_LOSS_WEIGHT = 0.4


@dataclasses.dataclass
class RunConfig:
    """Everything a training run depends on; saved as `RUN/config.json` so a run can be repeated.

    Sizes are (height, width). `batch_size` is per replica: the global batch is
    `batch_size * replicas`. `steps_per_epoch=None` means one pass over the training set.
    """

    preset: str = "synthetic"
    dataset: str = "synthetic"
    data_dir: str = "data/synthetic"
    # Globs of TFRecord shards; None -> `data_dir/train-*.tfrecord` and `data_dir/val-*.tfrecord`.
    train_pattern: str | None = None
    val_pattern: str | None = None
    mapillary_config: str | None = None
    num_classes: int = 10
    # Model (see `synergyseg.build_synergyseg`).
    backbone: str = "resnet18"
    # One of `names.BACKBONE_OUTPUT_STRIDES[backbone]` (ResNets 16 or 8; MobileNetV3 32 or 16).
    output_stride: int = 16
    # The per-scale head, `names.HEADS`: "deeplabv3plus" (the paper's) or "lraspp" (MobileNetV3
    # paper, 6.4; it reads backbone_width and head_filters, not low_level_filters/dropout/separable).
    head: str = "deeplabv3plus"
    fusion: str = "uncertainty"
    # Where softmax and the fusion run, `names.FUSE_AT`: "input" (both scales at the input size) or
    # "decoder" (on the high scale's head grid, the fused map upsampled once).
    fuse_at: str = "input"
    backbone_weights: str | None = None
    backbone_width: int = 64
    head_filters: int = 256
    low_level_filters: int = 48
    dropout: float = 0.1
    # Depthwise-separable ASPP/decoder convs; None = the trunk's default (separable for MobileNetV3).
    separable: bool | None = None
    # Data.
    crop_size: tuple = (128, 256)
    scale_range: tuple | None = (0.5, 2.0)
    flip: bool = True
    jitter: bool = False
    eval_resize_factor: float | None = None
    val_limit: int | None = None
    # Recipe (the paper's section IV in the cityscapes preset).
    batch_size: int = 8
    epochs: int = 10
    steps_per_epoch: int | None = None
    learning_rate: float = 0.01
    end_learning_rate: float = 0.0
    poly_power: float = 0.9
    warmup_steps: int = 0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    # Weight of a cross-entropy on each scale's own prediction (s_lo, s_hi) beside the fused one.
    # None: AUX_LOSS_WEIGHT when the fusion combines both scales, 0 for "low"/"high" (one scale,
    # nothing to add); 0 is the paper's recipe (the loss on the fused map only).
    aux_loss_weight: float | None = None
    clipnorm: float | None = None
    mixed_precision: bool = False
    jit_compile: bool = False
    # Keras's compile(run_eagerly=True): every step op by op, no traced graph. Slower per step, but
    # a run of a few steps skips tracing the training graph (tens of seconds on a CPU), which makes
    # it the tests' choice for short runs of tiny models; a debugging aid otherwise.
    run_eagerly: bool = False
    strategy: str = "auto"
    seed: int = 0
    run_dir: str = "runs/synthetic"
    tensorboard_images: int = 3
    # Synthetic set written when `data_dir` has none (synthetic preset only).
    synthetic_train: int = 400
    synthetic_val: int = 50
    # 256x512 scenes, trained on 128x256 crops: at this size the near trucks and walls are larger
    # than what the full-scale branch sees, so the paper's effect appears (docs/model.md); at 128x256 the
    # full scale alone wins. Crops keep the step as cheap as at 128x256.
    synthetic_size: tuple = (256, 512)

    def __post_init__(self):
        # JSON has no tuples; normalise so a config read back compares equal to the one written.
        for name in ("crop_size", "scale_range", "synthetic_size"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, tuple(value))
        self.validate()

    def validate(self):
        """Raises ValueError naming the field when a value cannot work."""
        if self.dataset not in data_info.DATASETS:
            raise ValueError(f"dataset={self.dataset!r}: expected one of {data_info.DATASETS}")
        for name, allowed in (("backbone", names.BACKBONES), ("fusion", names.FUSIONS),
                              ("head", names.HEADS), ("fuse_at", names.FUSE_AT)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}: expected one of {allowed}")
        allowed = names.BACKBONE_OUTPUT_STRIDES[self.backbone]
        if self.output_stride not in allowed:
            raise ValueError(f"output_stride={self.output_stride!r}: expected one of {allowed} "
                             f"for backbone={self.backbone!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy={self.strategy!r}: expected one of {STRATEGIES}")
        if self.dataset == "mapillary" and not self.mapillary_config:
            raise ValueError("dataset='mapillary' needs mapillary_config (the Vistas config.json)")
        if len(self.crop_size) != 2 or min(self.crop_size) < 8:
            raise ValueError(f"crop_size={self.crop_size}: expected (height, width), each >= 8")
        for name in ("num_classes", "batch_size", "epochs"):
            if getattr(self, name) < 1 + (name == "num_classes"):
                raise ValueError(f"{name}={getattr(self, name)} is too small")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch={self.steps_per_epoch}: expected >= 1 or None")
        if self.learning_rate <= 0 or self.weight_decay < 0 or self.aux_weight < 0:
            raise ValueError("learning_rate must be > 0; weight_decay and aux_loss_weight >= 0")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps={self.warmup_steps}: expected >= 0")
        if self.run_eagerly and (self.jit_compile or self.strategy == "multiworker"):
            raise ValueError("run_eagerly=True runs no compiled graph: it cannot be combined with "
                             "jit_compile=True or strategy='multiworker'")

    @property
    def aux_weight(self):
        """The auxiliary loss weight this run trains with (`aux_loss_weight`, None resolved)."""
        return aux_weight(self.aux_loss_weight, self.fusion)

    @property
    def train_files(self):
        return self.train_pattern or os.path.join(self.data_dir, "train-*.tfrecord")

    @property
    def val_files(self):
        return self.val_pattern or os.path.join(self.data_dir, "val-*.tfrecord")

    def replace(self, **overrides):
        """A copy with `overrides` applied; unknown names raise with the list of fields."""
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"Unknown RunConfig field(s) {unknown}; fields: {field_names()}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json(self, path):
        """Writes the config atomically (temp file, then rename)."""
        write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, values):
        unknown = sorted(set(values) - set(field_names()))
        if unknown:
            raise ValueError(f"Unknown RunConfig field(s) {unknown}; fields: {field_names()}")
        return cls(**values)

    @classmethod
    def from_json(cls, path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Run config not found: {path}")
        with open(path) as f:
            try:
                values = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not valid JSON ({e})") from e
        try:
            return cls.from_dict(values)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from e


def aux_weight(aux_loss_weight, fusion):
    """`aux_loss_weight`, or for None the default of `fusion`: AUX_LOSS_WEIGHT, 0 for one scale."""
    if aux_loss_weight is not None:
        return float(aux_loss_weight)
    return 0.0 if fusion in names.SINGLE_SCALE_FUSIONS else AUX_LOSS_WEIGHT


def field_names():
    return [f.name for f in dataclasses.fields(RunConfig)]


# The budget on the synthetic scenes of the fusion study and of the real-time options (15 epochs of
# 50 steps): their committed results (BENCHMARKS.md) were trained at it, and the real-time presets
# on the synthetic scenes keep it. The main job trains fewer epochs (below).
SYNTHETIC_STUDY_EPOCHS = 15

PRESETS = {
    # The main job, within 10 minutes on this project's 2-core CPU (README: time and what it
    # reaches; benchmarks/main_job.py). Measured 2026-11-30 on 2 idle cores: 0.70 s per step of 8
    # crops of 128x256 (from 256x512 scenes), ~13 s of validation, checkpoints and figures per
    # epoch, ~35 s of tracing; 15 epochs were on course for ~14 min that day, so 8 x 50 steps
    # (6.9 min measured).
    "synthetic": RunConfig(backbone_width=16, head_filters=64, low_level_filters=16, epochs=8),
    # The paper's recipe (section IV): ResNet-50, SGD momentum 0.9, weight decay 5e-4, batch 2 per
    # GPU, lr 0.01 with polynomial decay, 150 epochs; plus the per-scale auxiliary losses (the
    # paper has the fused loss only: aux_loss_weight=0 trains its recipe exactly). The crop is not
    # in the paper; 768x768 is the common Cityscapes crop (DeepLab uses 769) that fits batch 2 of
    # the two-scale ResNet-50 in 12 GB.
    "cityscapes": RunConfig(
        preset="cityscapes", dataset="cityscapes", data_dir="data/cityscapes", num_classes=19,
        backbone="resnet50", crop_size=(768, 768), batch_size=2, epochs=150,
        run_dir="runs/cityscapes", synthetic_train=0, synthetic_val=0),
    # Mapillary Vistas v1.2: 66 labels of which 65 are scored (the 66th, "unlabeled", -> 255).
    # 1024x1024 crops of images whose shorter side the converter resized (the paper crops to
    # 2177x1632 to save memory; a crop of that size does not fit batch 2 on a 24 GB card).
    "mapillary": RunConfig(
        preset="mapillary", dataset="mapillary", data_dir="data/mapillary",
        mapillary_config="data/mapillary/config.json", num_classes=65, backbone="resnet50",
        crop_size=(1024, 1024), batch_size=2, epochs=150, run_dir="runs/mapillary",
        synthetic_train=0, synthetic_val=0),
}


# The real-time models (issue 18), picked from the measured tables by benchmarks/realtime_choice.py
# (tests/test_realtime_choice.py checks these are its choice of the committed results; numbers in
# BENCHMARKS.md "Real-time model"): `realtime`, the fastest option within 2 mIoU of the most accurate
# one, and `realtime-fast`, the most accurate at 30 FPS or more two-scale at 512x1024 in TFLite on
# this project's 2-core CPU. Both are LR-ASPP heads (128 filters) on MobileNetV3 trunks, the two
# scales fused on the head's stride-8 grid and upsampled once. The recipes are the ones above (with
# the default per-scale losses: +0.7 and +3.8 mIoU over the fused loss alone, three seeds,
# benchmarks/results/realtime_presets_aux.md); on
# real data pass backbone_weights= keras.applications' "notop" .h5 of the trunk (MobileNetV3Large
# for `realtime`, MobileNetV3Small(minimalistic=True) for `realtime-fast`).
REALTIME_MODEL = dict(head="lraspp", backbone="mobilenetv3_large_cut16", output_stride=16,
                      backbone_width=64, head_filters=128, fuse_at="decoder")
REALTIME_FAST_MODEL = dict(REALTIME_MODEL, backbone="mobilenetv3_small_minimal_cut16")
for _name, _model in (("realtime", REALTIME_MODEL), ("realtime-fast", REALTIME_FAST_MODEL)):
    PRESETS[_name] = PRESETS["synthetic"].replace(
        preset=_name, run_dir=f"runs/{_name}", epochs=SYNTHETIC_STUDY_EPOCHS, **_model)
    for _data in ("cityscapes", "mapillary"):
        PRESETS[f"{_name}-{_data}"] = PRESETS[_data].replace(
            preset=f"{_name}-{_data}", run_dir=f"runs/{_name}-{_data}", **_model)

# The real-time options of issue 18, each head x trunk on the main job's data and recipe (the
# synthetic preset's), fused on the head's grid; benchmarks/realtime_options.py trains and
# benchmarks/realtime_speed.py times every one, and the measured table picks `realtime`.
# Named "realtime-<head>-<trunk>", e.g. "realtime-lraspp-large-cut16". They train with the fused
# loss only (aux_loss_weight 0): the committed table the presets were chosen from was trained so.
REALTIME_HEADS = {
    "deeplab": dict(head="deeplabv3plus", head_filters=128, low_level_filters=32, separable=True),
    "lraspp": dict(head="lraspp", head_filters=128),
}
REALTIME_TRUNKS = {
    "large32": dict(backbone="mobilenetv3_large", output_stride=32),
    "large16": dict(backbone="mobilenetv3_large", output_stride=16),
    "large-reduced": dict(backbone="mobilenetv3_large_reduced", output_stride=16),
    "large-cut16": dict(backbone="mobilenetv3_large_cut16", output_stride=16),
    "small32": dict(backbone="mobilenetv3_small", output_stride=32),
    "small-reduced": dict(backbone="mobilenetv3_small_reduced", output_stride=16),
    "small-minimal": dict(backbone="mobilenetv3_small_minimal", output_stride=32),
    "small-minimal-cut16": dict(backbone="mobilenetv3_small_minimal_cut16", output_stride=16),
}
REALTIME_OPTIONS = tuple(f"realtime-{head}-{trunk}" for head in REALTIME_HEADS for trunk in REALTIME_TRUNKS)
for _head, _head_fields in REALTIME_HEADS.items():
    for _trunk, _trunk_fields in REALTIME_TRUNKS.items():
        _name = f"realtime-{_head}-{_trunk}"
        PRESETS[_name] = PRESETS["synthetic"].replace(
            preset=_name, run_dir=f"runs/{_name}", epochs=SYNTHETIC_STUDY_EPOCHS, fuse_at="decoder",
            backbone_width=64, aux_loss_weight=0.0,
            **_head_fields, **_trunk_fields)


def preset(name, **overrides):
    """The named preset with `overrides` applied (e.g. `preset("cityscapes", batch_size=4)`)."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides)


def dataset_info(config):
    """The `DatasetInfo` (class names, colours) of the dataset `config` trains on."""
    found = data_info.info_for(config.dataset, config.mapillary_config)
    if found.num_classes != config.num_classes:
        raise ValueError(
            f"num_classes={config.num_classes} but dataset {config.dataset!r} has "
            f"{found.num_classes} classes")
    return found



def _field_type(name):
    """int, float, bool, str or tuple: what a field holds when it is not None."""
    annotation = {f.name: f.type for f in dataclasses.fields(RunConfig)}[name]
    text = annotation if isinstance(annotation, str) else repr(annotation)
    for kind in ("tuple", "bool", "int", "float"):
        if text.startswith(kind) or f"'{kind}'" in text or f"<class '{kind}'>" in text:
            return {"tuple": tuple, "bool": bool, "int": int, "float": float}[kind]
    return str


def parse_field(name, text):
    """A command-line string as the value of field `name` ("none" -> None, "128x256" -> (128, 256))."""
    if name not in field_names():
        raise ValueError(f"Unknown RunConfig field {name!r}")
    kind = _field_type(name)
    if text.lower() == "none" and kind is not str:
        return None
    if kind is bool:
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"{name}: expected true or false, got {text!r}")
        return text.lower() in ("true", "1", "yes")
    if kind is tuple:
        parts = text.lower().replace("x", ",").split(",")
        try:
            return tuple(float(p) if "." in p else int(p) for p in parts)
        except ValueError:
            raise ValueError(f"{name}: expected numbers like 128x256 or 0.5,2.0, got {text!r}") from None
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"{name}: expected {kind.__name__}, got {text!r}") from None
