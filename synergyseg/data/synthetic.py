"""Procedural street scenes with a Cityscapes-like class set, deterministic by seed, as TFRecords.

The scenes are built to contain the two failure modes the paper addresses (Sec. III-A):

* thin and far objects -- dark poles, signs and distant people at least `height / 128` px wide
  (2-3 px at 256x512) -- that the full scale can learn but a half-resolution input blurs away, and
* large near objects whose local texture is ambiguous: a truck and a building front are drawn in
  boxes from one distribution (45-80 % of the image height, 1.2-2.5 times as wide, standing on
  the road) by the same texture function from the same palette, so only the wheels along the
  bottom and the cab at one end tell them apart. Each is in 60 % of the scenes, often both, so
  image-level context (ASPP's pooling) cannot decide either. Their interiors lie farther from
  those cues than the full-scale branch of a small DeepLabV3+ effectively sees at 256x512,
  while the half-scale branch sees twice the context.

Geometry is a pinhole camera 1.5 m above a flat street: an object touching the ground `dy` rows
below the horizon is drawn at `dy / 1.5` pixels per metre, so everything shrinks toward the
horizon. Generation is vectorised numpy; ~10 ms per 256x512 scene.
"""

import io

import numpy as np
from PIL import Image

from synergyseg.data import shards
from synergyseg.data.info import SYNTHETIC
from synergyseg.data.tfrecord import encode_example

ROAD, SIDEWALK, BUILDING, POLE, SIGN, VEGETATION, SKY, PERSON, CAR, TRUCK = range(10)
assert SYNTHETIC.class_names[TRUCK] == "truck"  # label order is shared with info.SYNTHETIC

CAMERA_HEIGHT_M = 1.5
# Bumped whenever a seed renders another scene; kept in the shards' manifest.
SCENE_VERSION = 2
# One palette for facades and truck containers: sharing it is what makes their texture ambiguous.
_FACADE_PALETTE = np.array([
    (150, 140, 130), (170, 120, 100), (120, 110, 100), (185, 175, 150), (130, 130, 140),
    (160, 100, 80), (200, 190, 170), (110, 120, 110), (140, 150, 160), (175, 155, 120),
], np.float32)
_WINDOW_TINT = np.array([20, 30, 45], np.float32)  # windows: darker and bluish
_SIGN_COLORS = np.array([(230, 200, 20), (30, 80, 200), (210, 30, 30), (235, 235, 235)], np.float32)
_CAR_COLORS = np.array([(30, 30, 120), (150, 20, 20), (200, 200, 205), (20, 20, 20),
                        (90, 110, 130), (170, 150, 40)], np.float32)


def _window_mask(u, v, period_u, period_v, fill_u, fill_v):
    """Periodic window grid in facade coordinates (u across, v up)."""
    return ((u / period_u) % 1.0 < fill_u) & ((v / period_v) % 1.0 < fill_v)


def _facade_texture(rng, shape, mask_windows, base):
    """Facade colour: base with per-pixel noise, windows darker and bluish."""
    noise = 6.0 * rng.standard_normal(shape[:2] + (1,), dtype=np.float32)
    return np.where(mask_windows[..., None], base * 0.35 + _WINDOW_TINT, base) + noise


class _Canvas:
    """An image and its label, painted back to front."""

    def __init__(self, height, width):
        self.h, self.w = height, width
        self.image = np.zeros((height, width, 3), np.float32)
        self.label = np.full((height, width), SKY, np.uint8)

    def rect(self, y0, y1, x0, x1, color, cls):
        """Fill rows [y0, y1) and columns [x0, x1), clipped; at least one pixel wide and high."""
        y0, x0 = int(np.floor(y0)), int(np.floor(x0))
        y1, x1 = max(int(np.round(y1)), y0 + 1), max(int(np.round(x1)), x0 + 1)
        y0, y1, x0, x1 = max(y0, 0), min(y1, self.h), max(x0, 0), min(x1, self.w)
        if y0 < y1 and x0 < x1:
            self.image[y0:y1, x0:x1] = color
            self.label[y0:y1, x0:x1] = cls
        return y0, y1, x0, x1

    def ellipse(self, cy, cx, ry, rx, color, cls):
        y0, y1 = max(int(cy - ry), 0), min(int(cy + ry) + 1, self.h)
        x0, x1 = max(int(cx - rx), 0), min(int(cx + rx) + 1, self.w)
        if y0 >= y1 or x0 >= x1:
            return
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        inside = ((yy - cy) / max(ry, 0.5)) ** 2 + ((xx - cx) / max(rx, 0.5)) ** 2 <= 1.0
        self.image[y0:y1, x0:x1][inside] = color
        self.label[y0:y1, x0:x1][inside] = cls


def _street(canvas, rng, yh, xv, road_slope, side_slope):
    """Sky, road with lane marks, sidewalks and the two perspective facades (one per side)."""
    h, w = canvas.h, canvas.w
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    # One grain field serves every surface: they never overlap, and normals are the slow part.
    grain = rng.standard_normal((h, w, 1), dtype=np.float32)
    sky_t = np.clip(yy / max(yh, 1.0), 0, 1)[..., None]
    top = rng.uniform([50, 100, 170], [90, 140, 210]).astype(np.float32)
    low = rng.uniform([160, 180, 200], [200, 210, 230]).astype(np.float32)
    sky = top * (1 - sky_t) + low * sky_t

    dy = yy - yh
    d = np.abs(xx - xv)
    road = (dy > 0) & (d <= dy * road_slope)
    sidewalk = (dy > 0) & ~road & (d <= dy * side_slope)
    # Dashes repeat in depth (~1/dy), so they shorten toward the horizon.
    dashes = road & (d <= dy * 0.015 + 0.3) & ((150.0 / np.maximum(dy, 1e-3)) % 1.0 < 0.5)
    asphalt = np.float32(rng.uniform(80, 110))
    paving = rng.uniform([150, 140, 140], [190, 175, 175]).astype(np.float32)

    # Facades stand on the sidewalks' outer edges: the column at offset d from the vanishing
    # point has its base at row yh + d / side_slope and depth ~ 1/d. Segments along depth are
    # separate buildings. Everything but the window rows depends on the column only.
    depth_col = w / np.maximum(d, 1.0)
    n_seg = 64
    bounds = np.cumsum(rng.uniform(0.6, 2.5, n_seg)) + 0.5
    segment = np.minimum(np.searchsorted(bounds, depth_col), n_seg - 1)
    seg_height = rng.uniform(0.2, 1.0, n_seg).astype(np.float32)  # roof at yh - d * height
    seg_color = (_FACADE_PALETTE[rng.integers(0, len(_FACADE_PALETTE), n_seg)]
                 + rng.normal(0, 8, (n_seg, 3)).astype(np.float32))
    seg_pu = rng.uniform(0.25, 0.6, n_seg).astype(np.float32)  # window period along depth
    seg_pv = rng.uniform(0.08, 0.16, n_seg).astype(np.float32)  # ... in height (rows / d)
    base = yh + d / side_slope
    facade = (~road & ~sidewalk & (yy < base) & (yy >= yh - d * seg_height[segment]) & (d > 2.0))
    v = (yh - yy) / np.maximum(d, 1.0)
    windows = (_window_mask(depth_col + 0.1 * segment, v, seg_pu[segment], seg_pv[segment],
                            0.5, 0.55) & (yy < base - d * 0.04))
    wall = seg_color[segment]
    facade_color = np.where(windows[..., None], wall * 0.35 + _WINDOW_TINT, wall) + 6.0 * grain

    canvas.image[:] = np.where(
        facade[..., None], facade_color,
        np.where(sidewalk[..., None], paving + 5.0 * grain,
                 np.where(road[..., None], np.where(dashes[..., None], 225.0, asphalt + 5.0 * grain),
                          sky)))
    canvas.label[:] = np.select([facade, sidewalk, road], [BUILDING, SIDEWALK, ROAD], SKY)


def _frontal_facade(canvas, rng, y0, y1, x0, x1, cls):
    """A fronto-parallel textured box; used for both end-of-street walls and truck containers."""
    y0, y1, x0, x1 = canvas.rect(y0, y1, x0, x1, 0.0, cls)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    # The window period is drawn relative to the image, not the box, so a wall and a truck of
    # the same size on screen cannot be told apart by it.
    period = canvas.h * rng.uniform(0.03, 0.09)
    windows = _window_mask(xx - x0, yy - y0, period * rng.uniform(1.0, 2.0), period, 0.5, 0.55)
    base = _FACADE_PALETTE[rng.integers(0, len(_FACADE_PALETTE))] + rng.normal(0, 8, 3)
    canvas.image[y0:y1, x0:x1] = _facade_texture(rng, yy.shape, windows, base.astype(np.float32))


def _near_box(rng, height, width, yh, xv):
    """Geometry `(yb, box_h, x0, x1)` of a near frontal box; trucks and walls share it.

    One distribution for both means neither the size, the bottom row (both stand on the road)
    nor the horizontal position tells a truck from a wall: only the wheels and the cab do.
    The box is 45-80 % of the image height and 1.2-2.5 times as wide, far larger than what the
    full-scale branch of a small DeepLabV3+ effectively sees at the working size.
    """
    below = height - yh
    yb = yh + below * rng.uniform(0.35, 0.8)
    box_h = height * rng.uniform(0.45, 0.8)
    box_w = box_h * rng.uniform(1.2, 2.5)
    xc = xv + width * rng.uniform(-0.35, 0.35)
    return yb, box_h, xc - box_w / 2, xc + box_w / 2


def _wall(canvas, rng, yb, box_h, x0, x1):
    """A near building front standing on the road: the same textured box as a truck's container."""
    _frontal_facade(canvas, rng, yb - box_h, yb, x0, x1, BUILDING)


def _truck(canvas, rng, yb, box_h, x0, x1):
    """A side-on truck in the box: a textured container, a cab at one end and wheels below."""
    length = x1 - x0
    cab = rng.uniform(0.16, 0.22) * length
    facing = rng.choice([-1, 1])
    box_x0, box_x1 = (x0, x1 - cab) if facing > 0 else (x0 + cab, x1)
    wheel_r = 0.11 * box_h
    _frontal_facade(canvas, rng, yb - box_h, yb - 1.1 * wheel_r, box_x0, box_x1, TRUCK)
    cab_x0 = x1 - cab if facing > 0 else x0
    cab_color = _CAR_COLORS[rng.integers(0, len(_CAR_COLORS))]
    canvas.rect(yb - 0.75 * box_h, yb - wheel_r, cab_x0, cab_x0 + cab, cab_color, TRUCK)
    glass_x0 = cab_x0 + (0.45 * cab if facing > 0 else 0.1 * cab)
    canvas.rect(yb - 0.7 * box_h, yb - 0.48 * box_h, glass_x0, glass_x0 + 0.45 * cab,
                (40, 55, 70), TRUCK)
    for wx in (x0 + 0.12 * length, x0 + 0.3 * length, x0 + 0.85 * length):
        canvas.ellipse(yb - wheel_r, wx, wheel_r, wheel_r, (20, 20, 20), TRUCK)


def _car(canvas, rng, yb, xc, ppm):
    """A car seen from behind: body, dark rear window, wheels below."""
    width, height = 1.8 * ppm, 1.5 * ppm
    color = _CAR_COLORS[rng.integers(0, len(_CAR_COLORS))]
    canvas.rect(yb - height, yb - 0.15 * height, xc - width / 2, xc + width / 2, color, CAR)
    canvas.rect(yb - 0.95 * height, yb - 0.6 * height, xc - 0.4 * width, xc + 0.4 * width,
                (35, 40, 50), CAR)
    canvas.rect(yb - 0.2 * height, yb, xc - width / 2, xc - 0.25 * width, (15, 15, 15), CAR)
    canvas.rect(yb - 0.2 * height, yb, xc + 0.25 * width, xc + width / 2, (15, 15, 15), CAR)


def _person(canvas, rng, yb, xc, ppm):
    """A standing person: legs, torso, head."""
    height, width = rng.uniform(1.6, 1.9) * ppm, max(0.5 * ppm, canvas.h / 128)
    legs, torso = rng.uniform(20, 120, 3), rng.uniform(20, 240, 3)
    canvas.rect(yb - 0.48 * height, yb, xc - width / 2, xc + width / 2, legs, PERSON)
    canvas.rect(yb - 0.85 * height, yb - 0.48 * height, xc - width / 2, xc + width / 2, torso,
                PERSON)
    canvas.ellipse(yb - 0.93 * height, xc, 0.08 * height, 0.3 * width, (200, 160, 130), PERSON)


def _pole(canvas, rng, yb, xc, ppm):
    """A dark pole 5-9 m tall, with a sign on most; at least `height / 128` px wide (2 px at
    256 rows), so the full scale can learn it while half resolution blurs it into its background.

    Signs (0.6-1.0 m) hang 2.2-3.5 m above the street as real traffic signs do, not at the pole's
    top: near poles then show their sign inside the image, so the class is learnable (version 1
    hung them at the top, out of view on near poles, and no model learned them)."""
    thin = canvas.h / 128
    width = max(rng.uniform(0.1, 0.2) * ppm, thin)
    top = yb - rng.uniform(5.0, 9.0) * ppm
    canvas.rect(top, yb, xc - width / 2, xc - width / 2 + width, rng.uniform(25, 40), POLE)
    if rng.random() < 0.8:
        size = max(rng.uniform(0.6, 1.0) * ppm, 2 * thin)
        bottom = yb - rng.uniform(2.2, 3.5) * ppm
        color = _SIGN_COLORS[rng.integers(0, len(_SIGN_COLORS))]
        canvas.rect(bottom - size, bottom, xc - size / 2, xc + size / 2, color, SIGN)


def _tree(canvas, rng, yb, xc, ppm):
    """Trunk and a noisy green crown; both vegetation, as in Cityscapes."""
    canvas.rect(yb - 3.0 * ppm, yb, xc - 0.15 * ppm, xc + 0.15 * ppm, (80, 60, 40), VEGETATION)
    radius = rng.uniform(1.5, 2.5) * ppm
    canvas.ellipse(yb - 3.0 * ppm - 0.6 * radius, xc, radius, radius * rng.uniform(0.8, 1.2),
                   rng.uniform([40, 90, 20], [90, 140, 50]), VEGETATION)


def render_scene(seed, height=256, width=512):
    """One street scene: `(image uint8 (height, width, 3), label uint8 (height, width))`.

    `seed` is anything `np.random.default_rng` accepts; the same seed gives the same scene.
    """
    rng = np.random.default_rng(seed)
    canvas = _Canvas(height, width)
    yh = height * rng.uniform(0.36, 0.46)
    xv = width * rng.uniform(0.4, 0.6)
    road_slope = rng.uniform(1.0, 1.6) * width / (2 * height)
    side_slope = road_slope * rng.uniform(1.4, 1.8)
    _street(canvas, rng, yh, xv, road_slope, side_slope)
    below = height - yh

    # Optional far end-of-street wall, then things on the street, far first.
    if rng.random() < 0.5:
        d_end = width * rng.uniform(0.04, 0.15)
        _frontal_facade(canvas, rng, yh - d_end * rng.uniform(0.4, 1.5), yh + d_end / side_slope,
                        xv - d_end, xv + d_end, BUILDING)
    unit = height / 256  # distances below are in rows of a 256-row image

    def distance(near_fraction, far_rows):
        """Rows below the horizon, log-uniform: as many far objects as near ones."""
        low = far_rows * unit
        return float(np.exp(rng.uniform(np.log(low), np.log(max(near_fraction * below, low)))))

    things = []  # (dy, kind, lateral position in units of dy, or a near box)
    for _ in range(rng.integers(16, 30)):  # poles on both sidewalks, mostly far
        side = rng.choice([-1, 1]) * rng.uniform(road_slope * 1.05, side_slope * 0.95)
        things.append((distance(0.3, 5), "pole", side))
    # People from far (1-3 px wide) to near (half the image tall, in front of trucks and walls):
    # most on the sidewalks, some crossing the road.
    for _ in range(rng.integers(6, 14)):
        if rng.random() < 0.7:
            side = rng.choice([-1, 1]) * rng.uniform(road_slope, side_slope)
        else:
            side = rng.uniform(-0.9, 0.9) * road_slope
        things.append((distance(0.95, 3), "person", side))
    for _ in range(rng.integers(2, 7)):
        things.append((distance(0.6, 2), "car", rng.uniform(-0.75, 0.75) * road_slope))
    for _ in range(rng.integers(0, 4)):
        side = rng.choice([-1, 1]) * rng.uniform(road_slope * 1.1, side_slope)
        things.append((distance(0.4, 4), "tree", side))
    # Near trucks and near walls, each in 60 % of the scenes and so often together: then the
    # image-level context (ASPP's pooling) cannot say which of the two a textured box is.
    boxes = [_near_box(rng, height, width, yh, xv) if rng.random() < 0.6 else None
             for _ in range(2)]
    if all(boxes):
        # The truck stands in front: a wall must not hide the wheels and cab that identify it.
        boxes.sort(key=lambda box: box[0])
    for kind, box in zip(("wall", "truck"), boxes):
        if box is not None:
            things.append((box[0] - yh, kind, box))
    draw = {"pole": _pole, "person": _person, "car": _car, "tree": _tree}
    for dy, kind, where in sorted(things, key=lambda t: t[0]):
        if kind == "truck":
            _truck(canvas, rng, *where)
        elif kind == "wall":
            _wall(canvas, rng, *where)
        else:
            yb, xc, ppm = yh + dy, xv + where * dy, dy / CAMERA_HEIGHT_M
            draw[kind](canvas, rng, yb, xc, ppm)

    image = canvas.image + 2.0 * rng.standard_normal(canvas.image.shape, dtype=np.float32)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), canvas.label


def _encode(array, image_format="png"):
    buffer = io.BytesIO()
    if image_format == "jpeg":
        Image.fromarray(array).save(buffer, format="JPEG", quality=95)
    else:
        Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def encode_scene(item):
    """Shard-writer callback: `(seed, height, width, name, image_format)` -> (example, histogram)."""
    seed, height, width, name, image_format = item
    image, label = render_scene(seed, height, width)
    record = encode_example(_encode(image, image_format), _encode(label), filename=name,
                            height=height, width=width, image_format=image_format)
    return record, shards.label_histogram(label)


def generate(out_dir, *, num_train=400, num_val=50, height=256, width=512, seed=0, num_shards=8,
             image_format="png", workers=None, log=print):
    """Write the synthetic train/val splits as `train-XXXXX-of-YYYYY.tfrecord` and `val-...`.

    Args:
        out_dir: output directory.
        num_train, num_val: scenes per split.
        height, width: scene size in pixels.
        seed: the whole set is a function of it; train and val never share a scene.
        num_shards: train shards; val gets one shard per 25 scenes, at most `num_shards`.
        image_format: "png" (lossless, default) or "jpeg" (quality 95; decodes several times
            faster, for input-pipeline benchmarks at large sizes). Labels are always PNG.
        workers: processes (default: CPU count).
        log: progress and summary output (`None` for silence).

    Returns:
        {"train": ConversionSummary, "val": ConversionSummary}.
    """
    # A seed triple keeps each split's scenes independent of the other split's size.
    items = {split: [((seed, split_id, i), height, width, f"synthetic/{split}/{i:06d}.png",
                      image_format) for i in range(count)]
             for split, split_id, count in (("train", 0, num_train), ("val", 1, num_val))}
    split_shards = {"train": num_shards, "val": min(num_shards, max(1, num_val // 25))}
    parameters = {"dataset": "synthetic", "version": SCENE_VERSION, "height": height,
                  "width": width, "seed": seed, "image_format": image_format}
    return shards.write_splits(out_dir, items, encode_scene, num_shards=split_shards,
                               class_names=SYNTHETIC.class_names, workers=workers,
                               parameters=parameters, log=log)
