"""Uncertainty-gated inference: the full-resolution pass runs only on the tiles where the low scale is unsure.

Eq. 1, `S = U(S_lo) + S_hi * U(1 - S_lo)`, mostly ignores `S_hi` where the low scale is confident
(`U(1 - S_lo)` is near 0 there), yet the two-scale model pays for the whole full-resolution pass.
`GatedSynergySeg` runs the low scale on the whole image, cuts the full-resolution image into tiles
(each read with a margin of context that is cropped off after), ranks the tiles by the low scale's
root-mean-square uncertainty `U(1 - max_c S_lo)` (SynergySeg's "uncertainty" output), and runs the shared submodel as one batch on the selected
tiles only. Eq. 1 (or the model's fusion) fuses where the high scale ran; elsewhere `U(S_lo)` stands.
Both passes run the submodel rewritten for inference (`synergyseg.models.rewrite`): BatchNorm folded
into its conv, and on the tiles (never larger than `tile_size + 2 * margin`) the conv taps that
read only padding there dropped (ASPP's rate-12 and -18 branches on a 160-px window).

    gated = gated_synergyseg(model, fraction=0.25)     # model: a trained SynergySeg
    probabilities = gated.predict(images)              # (batch, h, w, classes)
"""

import keras
from keras import ops

from synergyseg.models.fusion import _Fusion, fusion_name, make_fusion
from synergyseg.models.names import FUSED, S_LO, UNCERTAINTY
from synergyseg.models.resize import Downsample, resize_bilinear, spatial_size
from synergyseg.models.rewrite import rewrite_for_inference
from synergyseg.models.synergy import as_synergyseg, two_scale_config, two_scale_parts

# Tiles of 128 px with a 16 px margin and a quarter of them, from benchmarks/gated_curves.py on the
# main job's model (BENCHMARKS.md, "Gated inference"): fraction 0.25 scores 58.2 mIoU against the
# two-scale model's 57.3 and the oracle choice's 58.7; 64 px tiles score up to 0.6 more, but their
# windows (tile + 2 margins) are 2.3-4x a tile's pixels against 1.6x here. ResNet-50 at 512x1024
# and 1024x2048 runs it in 0.41x / 0.47x the two-scale time on a 2-core CPU.
DEFAULT_TILE_SIZE = 128
DEFAULT_MARGIN = 16
DEFAULT_FRACTION = 0.25
# Below this a tile is a single pixel at the submodel's stride 16.
MIN_TILE_SIZE = 16
# How the ASPP image-pooling branch sees the whole image inside a tile: "low" feeds it the low
# scale's pooled trunk features (the whole image's mean, at half resolution); "tile" lets it pool
# over the tile alone, as the plain submodel does.
POOLINGS = ("low", "tile")
# "tile" scored higher than "low" at every fraction, tile size and margin on the main job's model
# (benchmarks/gated_curves.py) and works with any submodel (LR-ASPP has no pooled context to share).
DEFAULT_POOLING = "tile"
# Fusions whose output at a pixel depends only on U(S_lo) and S_hi at that pixel, so they run on the
# selected tiles alone; the others ("uncertainty_confidence" upsamples 1 - max_c S_lo, "attention"
# reads S_lo through convolutions) run on the whole image (6 ms of 62 for the main job's model at
# 256x512 on the shared CPU).
PIXELWISE_FUSIONS = ("uncertainty", "low", "high", "average", "max")
# The extra output key of `scale_outputs=True`: 1 where the high scale ran, 0 where `U(S_lo)` stands.
GATE = "gate"


def check_gating(tile_size, margin, fraction, threshold, max_tiles, pooling):
    """Raises ValueError naming the knob and what was expected; returns (fraction, threshold) resolved.

    Exactly one of `fraction` and `threshold` is used; both None means `DEFAULT_FRACTION`.
    """
    if not isinstance(tile_size, int) or isinstance(tile_size, bool) or tile_size < MIN_TILE_SIZE:
        raise ValueError(f"gated tile_size must be an integer >= {MIN_TILE_SIZE} pixels, got {tile_size!r}")
    if not isinstance(margin, int) or isinstance(margin, bool) or not 0 <= margin < tile_size:
        raise ValueError(
            f"gated margin must be an integer with 0 <= margin < tile_size ({tile_size}), got {margin!r}")
    if fraction is not None and threshold is not None:
        raise ValueError(f"gated takes a fraction or a threshold, not both (got fraction={fraction!r}, "
                         f"threshold={threshold!r})")
    if fraction is None and threshold is None:
        fraction = DEFAULT_FRACTION
    if fraction is not None and not (isinstance(fraction, (int, float)) and 0.0 <= fraction <= 1.0):
        raise ValueError(f"gated fraction must be a number in [0, 1] (share of tiles), got {fraction!r}")
    if threshold is not None and not (isinstance(threshold, (int, float)) and 0.0 <= threshold <= 1.0):
        raise ValueError(
            f"gated threshold must be a number in [0, 1] (a tile's root-mean-square uncertainty), got {threshold!r}")
    if max_tiles is not None and (not isinstance(max_tiles, int) or isinstance(max_tiles, bool)
                                  or max_tiles < 0):
        raise ValueError(f"gated max_tiles must be None or an integer >= 0 (per image), got {max_tiles!r}")
    if pooling not in POOLINGS:
        raise ValueError(f"gated pooling must be one of {POOLINGS}, got {pooling!r}")
    return (None if fraction is None else float(fraction)), (None if threshold is None else float(threshold))


def tiles_for_fraction(fraction, num_tiles):
    """The number of tiles `fraction` selects out of `num_tiles`: the nearest whole number, halves up."""
    return ops.cast(ops.floor(fraction * ops.cast(num_tiles, "float32") + 0.5), "int32")


# Tiles are ranked by the root mean square of their uncertainty: against the mean, the max and the
# 90th percentile (benchmarks/gated_curves.py --scores, 128 px tiles, fractions 0.1-0.6) it scored
# the highest summed over the main job's and the Cityscapes-layout set's curves, and at a quarter
# of the tiles it was ahead of the mean on both (BENCHMARKS.md, "Gated inference").
def tile_scores(uncertainty, tile_size):
    """Root mean square of `uncertainty` `(batch, h, w)` over each tile of a `tile_size` grid:
    `(batch, rows, cols)`. Ranking by it favours tiles with a patch of high uncertainty over tiles
    of uniform mild doubt with the same mean.

    Tiles start at multiples of `tile_size`; the last row and column of tiles are cut at the image's
    edge and averaged over the pixels they hold.
    """
    h, w = spatial_size(uncertainty[..., None])
    rows, cols = -(-h // tile_size), -(-w // tile_size)
    padded = ops.pad(ops.square(uncertainty), [[0, 0], [0, rows * tile_size - h], [0, cols * tile_size - w]])
    sums = ops.sum(ops.reshape(padded, (-1, rows, tile_size, cols, tile_size)), axis=(2, 4))
    tile_h = ops.minimum(tile_size, h - ops.arange(rows) * tile_size)
    tile_w = ops.minimum(tile_size, w - ops.arange(cols) * tile_size)
    counts = ops.cast(tile_h[:, None] * tile_w[None, :], sums.dtype)
    return ops.sqrt(sums / counts)


def select_tiles(scores, fraction=None, threshold=None, max_tiles=None):
    """Which tiles get the high scale: `(image, tile)` index pairs, most uncertain first per image.

    Args:
        scores: `(batch, num_tiles)` score of each tile (`tile_scores`).
        fraction: select the nearest whole number of `fraction * num_tiles` most uncertain tiles
            of each image (halves round up).
        threshold: select every tile whose score is above `threshold` (exactly one of the two).
        max_tiles: at most this many per image (the most uncertain), None for no limit.

    Returns:
        `(image_index, tile_index)`, two int32 vectors of the same length (image-major order).
    """
    batch, num_tiles = ops.shape(scores)[0], ops.shape(scores)[1]
    if fraction is not None:
        count = tiles_for_fraction(fraction, num_tiles)
    else:
        count = num_tiles
    if max_tiles is not None:
        count = ops.minimum(count, max_tiles)
    # top_k sorts each image's tiles by score (ties: the lower index first).
    values, order = ops.top_k(scores, k=num_tiles, sorted=True)
    order = ops.cast(order, "int32")
    if threshold is None:
        # A fixed count per image: static shapes, no boolean mask.
        chosen = order[:, :count]
        image = ops.repeat(ops.arange(batch, dtype="int32"), count)
        return image, ops.reshape(chosen, (-1,))
    keep = ops.logical_and(values > threshold, ops.arange(num_tiles)[None, :] < count)
    import tensorflow as tf  # a data-dependent count: tf.where (the model needs the TensorFlow backend)

    where = tf.cast(tf.where(keep), "int32")
    return where[:, 0], tf.gather_nd(order, where)


@keras.saving.register_keras_serializable(package="synergyseg")
class GatedSynergySeg(keras.Model):
    """SynergySeg with the full-resolution pass only on the tiles where the low scale is unsure.

    Built from a trained model's submodel and fusion (nothing retrained; the passes run copies
    rewritten for inference, see `inference_rewrites`, and `gated_synergyseg`). The low scale runs on the whole image (`S_lo`); the image is cut into
    `tile_size` tiles, each read with `margin` extra pixels of context on every side (a window
    kept inside the image: at the border it shifts inward) and cropped back after. Tiles are
    ranked by the root mean square of `U(1 - max_c S_lo)`; the selected ones go through the submodel as one
    batch, the fusion runs on them, and elsewhere the output is `U(S_lo)`.

    Args:
        submodel: the shared per-scale model of a SynergySeg (e.g. a `DeepLabV3Plus`).
        fusion: a fusion name of `names.FUSIONS` or the trained model's fusion layer.
        tile_size: tile side in pixels (>= 16; multiples of the output stride keep the tile's
            features on the whole image's sampling grid).
        margin: context pixels read around each tile and cropped off (0 <= margin < tile_size).
        fraction: share of each image's tiles that get the high scale, in [0, 1]; 0 is the low
            scale alone, 1 every tile.
        threshold: instead of a fraction, every tile whose root-mean-square uncertainty is above this.
        max_tiles: at most this many tiles per image (the most uncertain), None for no limit; a
            fixed count bounds the latency.
        pooling: "low": the ASPP image-pooling branch of each tile gets the low scale's pooled
            features (the whole image's context); "tile": it pools over the tile alone (any
            submodel). "low" needs a submodel with `pooled_context_models` (DeepLabV3Plus).
        scale_outputs: if True, return a dict with "fused", "s_lo" (`U(S_lo)`), "uncertainty"
            (`U(1 - max_c S_lo)`, `(batch, h, w, 1)`, as `SynergySeg`'s) and "gate" (1 where the
            high scale ran).
        inference_rewrites: run copies of the submodel rewritten for inference (exact up to
            float32 rounding, `synergyseg.models.rewrite`): BatchNorm folded into its conv on
            both scales, and the tiles' convs cut to the taps a `tile_size + 2 * margin` window
            can read. The copies take the submodel's weights when this model is built (build it
            after loading them) and are kept beside them (in memory and in a saved file).
            False runs the submodel itself.
        class_names, palette: the dataset's class names and colours (travel with the model).

    Input `(batch, h, w, 3)` RGB in [0, 255], any h and w; output `(batch, h, w, num_classes)`
    float32 probabilities (or the dict above).

    Example:
        >>> gated = GatedSynergySeg(model.submodel, model.fusion, fraction=0.25)
        >>> probabilities = gated.predict(images)
    """

    def __init__(self, submodel, fusion="uncertainty", tile_size=DEFAULT_TILE_SIZE, margin=DEFAULT_MARGIN,
                 fraction=None, threshold=None, max_tiles=None, pooling=DEFAULT_POOLING, scale_outputs=False,
                 inference_rewrites=True, class_names=None, palette=None, name="gated_synergyseg", **kwargs):
        fraction, threshold = check_gating(tile_size, margin, fraction, threshold, max_tiles, pooling)
        fuse = make_fusion(fusion) if isinstance(fusion, str) else fusion
        if not isinstance(fuse, _Fusion):
            raise ValueError(f"fusion must be a fusion name or layer, got {fusion!r}")
        if pooling == "low" and not hasattr(submodel, "pooled_context_models"):
            raise ValueError(f"pooling='low' needs a submodel with an ASPP image-pooling branch "
                             f"(DeepLabV3Plus); {type(submodel).__name__} has none: use pooling='tile'")
        super().__init__(name=name, **kwargs)
        self.submodel = submodel
        self.fusion = fuse
        self.tile_size = tile_size
        self.margin = margin
        self.fraction = fraction
        self.threshold = threshold
        self.max_tiles = max_tiles
        self.pooling = pooling
        self.scale_outputs = bool(scale_outputs)
        self.class_names = list(class_names) if class_names is not None else None
        self.palette = [list(map(int, c)) for c in palette] if palette is not None else None
        self.downsample = Downsample(2, name="half_resolution", dtype=self.dtype_policy)
        if pooling == "low":
            # Views of the submodel's layers (same weights): the low scale also returns its pooled
            # trunk features, and the tile model takes them in place of its own pooling.
            self.low_scale, self.tile_model = submodel.pooled_context_models()
        else:
            self.low_scale = self.tile_model = None
        self.inference_rewrites = bool(inference_rewrites)
        low = self.low_scale if pooling == "low" else submodel
        tiles = self.tile_model if pooling == "low" else submodel
        if self.inference_rewrites:
            # Windows are never larger than a tile and its margins: exact for every window.
            window = tile_size + 2 * margin
            low, tiles = rewrite_for_inference(low), rewrite_for_inference(tiles, (window, window))
        # What runs: the low scale on the half-resolution image, the high scale on the windows.
        self.low_pass, self.tile_pass = low, tiles
        # Every weight already exists (the submodel's): built for any image size.
        self.build((None, None, None, 3))

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] not in (3, None):
            raise ValueError(f"GatedSynergySeg expects images (batch, height, width, 3); "
                             f"received shape {tuple(input_shape)}")
        self.built = True

    @property
    def num_classes(self):
        return int(self.submodel.output.shape[-1])

    @property
    def backbone(self):
        """The trunk model (as `SynergySeg.backbone`)."""
        return getattr(self.submodel, "backbone", None)

    @property
    def backbone_name(self):
        """The trunk's name in `names.BACKBONES`."""
        return getattr(self.submodel, "backbone_name", None)

    def pixelwise_fusion(self):
        """True when the fusion at a pixel reads only `U(S_lo)` and `S_hi` there: it runs on the tiles alone."""
        try:
            return fusion_name(self.fusion) in PIXELWISE_FUSIONS
        except ValueError:  # a fusion layer of another kind
            return False

    def high_scale_runs(self):
        """False when the knobs select no tile at any size (fraction 0 or max_tiles 0)."""
        return self.fraction != 0.0 and self.max_tiles != 0

    def call(self, images, training=False):
        import tensorflow as tf  # gathers and a data-dependent branch: TensorFlow backend only

        images = ops.cast(images, "float32")
        batch = ops.shape(images)[0]
        h, w = spatial_size(images)
        image_lo = self.downsample(images)
        if self.pooling == "low":
            s_lo, context = self.low_pass(image_lo, training=False)
        else:
            s_lo, context = self.low_pass(image_lo, training=False), None
        s_lo = ops.cast(s_lo, "float32")
        up_lo = resize_bilinear(s_lo, (h, w))
        # One meaning for "uncertainty" (SynergySeg's UncertaintyMask): the low scale's, then upsampled.
        uncertainty = resize_bilinear(1.0 - ops.max(s_lo, axis=-1, keepdims=True), (h, w))[..., 0]
        if self.high_scale_runs():
            fused, gate = self._high_scale(images, s_lo, up_lo, uncertainty, context, batch, h, w, tf)
        else:
            fused, gate = up_lo, ops.zeros_like(uncertainty)
        if not self.scale_outputs:
            return fused
        return {FUSED: fused, S_LO: up_lo, UNCERTAINTY: uncertainty[..., None], GATE: gate[..., None]}

    def _high_scale(self, images, s_lo, up_lo, uncertainty, context, batch, h, w, tf):
        t, m = self.tile_size, self.margin
        rows, cols = -(-h // t), -(-w // t)
        # Windows of one size for one batch: the tile plus its margins, never larger than the image.
        win_h, win_w = ops.minimum(t + 2 * m, h), ops.minimum(t + 2 * m, w)
        # Each window starts `margin` before its tile, shifted inward at the border (no padding).
        start_y = ops.clip(ops.arange(rows) * t - m, 0, h - win_h)
        start_x = ops.clip(ops.arange(cols) * t - m, 0, w - win_w)

        scores = ops.reshape(tile_scores(uncertainty, t), (batch, rows * cols))
        image_index, tile_index = select_tiles(scores, self.fraction, self.threshold, self.max_tiles)
        count = ops.shape(tile_index)[0]

        def no_tiles():
            return up_lo, ops.zeros_like(uncertainty)

        def tiles():
            return self._run_tiles(images, s_lo, up_lo, uncertainty, context, image_index, tile_index, count,
                                   start_y, start_x, win_h, win_w, rows, cols, h, w, tf)

        # No tile at all skips the submodel and the paste: the submodel fails on an empty batch (batch
        # norm broadcasts against it) and TFLite's gathers crash on empty indices.
        if isinstance(count, int):  # a static count (fixed input size)
            return tiles() if count > 0 else no_tiles()
        return tf.cond(count > 0, tiles, no_tiles)

    def _run_tiles(self, images, s_lo, up_lo, uncertainty, context, image_index, tile_index, count,
                   start_y, start_x, win_h, win_w, rows, cols, h, w, tf):
        """The high scale on the selected tiles as one batch, fused and pasted into `U(S_lo)`."""
        t = self.tile_size
        # expand_dims, not x[:, None]: TFLite cannot legalize such strided slices inside a cond branch.
        column, row = (lambda x: ops.expand_dims(x, 1)), (lambda x: ops.expand_dims(x, 0))
        # Gather the windows from the flattened batch: pixel (b, y, x) is row b*h*w + y*w + x.
        y0 = ops.take(start_y, tile_index // cols)
        x0 = ops.take(start_x, tile_index % cols)
        ys = column(y0) + row(ops.arange(win_h))
        xs = column(x0) + row(ops.arange(win_w))
        pixel = ops.expand_dims(column(image_index * h * w), 2) + ops.expand_dims(ys, 2) * w + ops.expand_dims(xs, 1)
        windows = ops.take(ops.reshape(images, (-1, 3)), pixel, axis=0)

        if context is None:
            s_hi_tiles = self.tile_pass(windows, training=False)
        else:
            s_hi_tiles = self.tile_pass([windows, ops.take(context, image_index, axis=0)], training=False)
        s_hi_tiles = ops.cast(s_hi_tiles, "float32")

        # Crop each tile (its margin off) and write it by index into a canvas padded to whole tiles
        # (indices never repeat: TFLite's scatter adds repeated ones), then cut the canvas to the image.
        core_h, core_w = ops.minimum(t, h), ops.minimum(t, w)  # the image, where it is smaller than a tile
        rows_in = column((tile_index // cols) * t) + row(ops.arange(core_h))  # (count, core_h)
        cols_in = column((tile_index % cols) * t) + row(ops.arange(core_w))
        # Rows of a cut edge tile that fall outside the image read its last row (cut off below).
        read_rows, read_cols = ops.minimum(rows_in, h - 1), ops.minimum(cols_in, w - 1)
        s_hi_cores = tf.gather(s_hi_tiles, read_rows - column(y0), axis=1, batch_dims=1)
        s_hi_cores = tf.gather(s_hi_cores, read_cols - column(x0), axis=2, batch_dims=1)  # (count, th, tw, C)
        shape = (count, core_h, core_w)
        image_at = ops.broadcast_to(ops.expand_dims(column(image_index), 2), shape)
        where = ops.stack([image_at, ops.broadcast_to(ops.expand_dims(rows_in, 2), shape),
                           ops.broadcast_to(ops.expand_dims(cols_in, 1), shape)], axis=-1)
        pad = [[0, 0], [0, rows * core_h - h], [0, cols * core_w - w]]

        def paste(image, cores):
            extra = len(image.shape) - 3  # the class axis, if any
            canvas = tf.tensor_scatter_nd_update(ops.pad(image, pad + [[0, 0]] * extra), where, cores)
            # tf.slice, not [:, :h, :w]: TFLite cannot legalize that strided slice inside a cond branch.
            return tf.slice(canvas, [0, 0, 0] + [0] * extra, ops.stack([-1, h, w] + [-1] * extra))

        gate = paste(ops.zeros_like(uncertainty), ops.ones(shape))
        if self.pixelwise_fusion():
            # Fused on the tiles alone: U(S_lo) is read there, the fusion's resize is the identity.
            read = ops.stack([image_at, ops.broadcast_to(ops.expand_dims(read_rows, 2), shape),
                              ops.broadcast_to(ops.expand_dims(read_cols, 1), shape)], axis=-1)
            fused_cores = ops.cast(self.fusion([tf.gather_nd(up_lo, read), s_hi_cores]), "float32")
            return paste(up_lo, fused_cores), gate
        # The fusion needs S_lo itself (its own upsampling, or weights): run it on the whole image.
        fused = ops.cast(self.fusion([s_lo, paste(ops.zeros_like(up_lo), s_hi_cores)]), "float32")
        return ops.where(ops.expand_dims(gate, -1) > 0, fused, up_lo), gate

    def compute_output_shape(self, input_shape):
        shape = (input_shape[0], input_shape[1], input_shape[2], self.num_classes)
        if not self.scale_outputs:
            return shape
        one = shape[:3] + (1,)
        return {FUSED: shape, S_LO: shape, UNCERTAINTY: one, GATE: one}

    def get_config(self):
        return {
            **two_scale_config(self),
            "tile_size": self.tile_size,
            "margin": self.margin,
            "fraction": self.fraction,
            "threshold": self.threshold,
            "max_tiles": self.max_tiles,
            "pooling": self.pooling,
            "inference_rewrites": self.inference_rewrites,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**two_scale_parts(config))


def gated_synergyseg(model, tile_size=DEFAULT_TILE_SIZE, margin=DEFAULT_MARGIN, fraction=None, threshold=None,
                     max_tiles=None, pooling=DEFAULT_POOLING, scale_outputs=False, inference_rewrites=True):
    """A `GatedSynergySeg` sharing a trained SynergySeg model's submodel and fusion (nothing retrained).

    Args:
        model: a `SynergySeg`, or a two-scale model saved by an older version. Tiles are fused
            at the input size, so a model fused at the decoder (`fuse_at="decoder"`) is gated as
            its input-fused form, `model.with_fusion(fuse_at="input")` (the same weights): at
            fraction 1 with one tile the gated model is that model, not the decoder-fused one.
        tile_size, margin, fraction, threshold, max_tiles, pooling, scale_outputs,
        inference_rewrites: as in `GatedSynergySeg`; fraction and threshold both None means
            `DEFAULT_FRACTION`.

    Example:
        >>> gated = gated_synergyseg(keras.models.load_model("runs/synthetic/best.keras"), fraction=0.25)
    """
    model = as_synergyseg(model)
    if model.fuse_at != "input":
        # The paste needs each scale's probabilities at the input size (the submodel's output) and
        # fuses there: the input-fused model of the same submodel and fusion.
        model = model.with_fusion(fuse_at="input")
    return GatedSynergySeg(model.submodel, model.fusion, tile_size=tile_size, margin=margin, fraction=fraction,
                           threshold=threshold, max_tiles=max_tiles, pooling=pooling,
                           scale_outputs=scale_outputs, inference_rewrites=inference_rewrites,
                           class_names=model.class_names, palette=model.palette,
                           name=f"gated_{model.name}", dtype=model.dtype_policy)


def tiles_selected(height, width, tile_size=DEFAULT_TILE_SIZE, fraction=DEFAULT_FRACTION, max_tiles=None):
    """How many tiles of one `height x width` image a fraction selects (for FLOP counts)."""
    rows, cols = -(-height // tile_size), -(-width // tile_size)
    count = int(fraction * rows * cols + 0.5)
    return count if max_tiles is None else min(count, max_tiles)


def gated_conv_flops(submodel, height, width, tiles, tile_size=DEFAULT_TILE_SIZE, margin=DEFAULT_MARGIN):
    """Conv FLOPs of gated inference on one image: the low scale plus `tiles` windows."""
    from synergyseg.models.flops import conv_flops

    low = conv_flops(submodel, -(-height // 2), -(-width // 2))
    if tiles == 0:
        return low
    window = conv_flops(submodel, min(tile_size + 2 * margin, height), min(tile_size + 2 * margin, width))
    return low + tiles * window
