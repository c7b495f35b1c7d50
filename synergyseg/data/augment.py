"""Training augmentation in TF ops, driven by stateless seeds so a given seed gives the same crops.

Every function takes an image (H, W, 3) float32 in [0, 255], a label (H, W) int32 and a seed of
shape (2,); none uses `py_function`, so they run inside tf.data's parallel map and under
tf.distribute.
"""

import tensorflow as tf

# Padding with the ImageNet mean gives zeros after the model's mean subtraction, so padded
# borders carry no signal.
from synergyseg.data.info import IGNORE_LABEL, IMAGENET_MEAN_RGB

# Random scale factors of training crops (DeepLab's and mmsegmentation's Cityscapes range).
SCALE_RANGE = (0.5, 2.0)


def pad_to_size(image, label, size):
    """Pad bottom/right to at least `size` (h, w): image with IMAGENET_MEAN_RGB, label with 255."""
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    pad_h, pad_w = tf.maximum(size[0] - h, 0), tf.maximum(size[1] - w, 0)
    paddings = [[0, pad_h], [0, pad_w]]
    mean = tf.constant(IMAGENET_MEAN_RGB, tf.float32)
    image = tf.pad(image - mean, paddings + [[0, 0]]) + mean
    label = tf.pad(label, paddings, constant_values=IGNORE_LABEL)
    return image, label


def random_crop(image, label, seed, size):
    """Crop a random `size` (h, w) window, padding first where the image is smaller."""
    image, label = pad_to_size(image, label, size)
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    # maxval is exclusive, so +1 makes the last valid offset reachable.
    top = tf.random.stateless_uniform((), seed, 0, h - size[0] + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform(
        (), tf.random.experimental.stateless_fold_in(seed, 1), 0, w - size[1] + 1, dtype=tf.int32)
    image = image[top:top + size[0], left:left + size[1]]
    label = label[top:top + size[0], left:left + size[1]]
    image.set_shape([size[0], size[1], 3])
    label.set_shape([size[0], size[1]])
    return image, label


def random_flip(image, label, seed):
    """Mirror image and label left-right with probability 1/2."""
    flip = tf.random.stateless_uniform((), seed) < 0.5
    image = tf.cond(flip, lambda: image[:, ::-1], lambda: image)
    label = tf.cond(flip, lambda: label[:, ::-1], lambda: label)
    return image, label


def photometric_jitter(image, seed):
    """Random brightness, contrast, saturation and hue (mild), clipped to [0, 255]."""
    seeds = tf.random.experimental.stateless_split(seed, 4)
    x = image / 255.0
    x = tf.image.stateless_random_brightness(x, 0.125, seeds[0])
    x = tf.image.stateless_random_contrast(x, 0.75, 1.25, seeds[1])
    x = tf.image.stateless_random_saturation(tf.clip_by_value(x, 0.0, 1.0), 0.75, 1.25, seeds[2])
    x = tf.image.stateless_random_hue(x, 0.04, seeds[3])
    return tf.clip_by_value(x, 0.0, 1.0) * 255.0


def random_scale_crop(image, label, seed, crop_size, scale_range=SCALE_RANGE):
    """A random scale (image bilinear, label nearest) then `random_crop`, computed only for the crop window.

    Equivalent to resizing the whole image by the drawn factor, padding it to `crop_size` and
    cutting a random window, but it interpolates just the window (`crop_and_resize`), so a 2x
    scale of a 1024x2048 image costs no more than the crop itself. Samples that fall outside
    the image (the padding, and a sub-pixel band at the border when upscaling) get IMAGENET_MEAN_RGB and
    255. `image` may be uint8 or float; `label` any integer type. Returns float32 and int32.
    """
    low, high = scale_range
    if not 0 < low <= high:
        raise ValueError(f"scale_range must be 0 < low <= high, got {scale_range}")
    seeds = tf.random.experimental.stateless_split(seed, 3)
    scale = tf.random.stateless_uniform((), seeds[0], low, high)
    size = tf.cast(tf.shape(image)[:2], tf.float32)
    scaled = tf.maximum(tf.round(size * scale), 1.0)
    crop = tf.constant(crop_size, tf.float32)
    room = tf.cast(tf.maximum(scaled, crop) - crop, tf.int32) + 1  # valid offsets per axis
    top = tf.random.stateless_uniform((), seeds[1], 0, room[0], dtype=tf.int32)
    left = tf.random.stateless_uniform((), seeds[2], 0, room[1], dtype=tf.int32)
    offset = tf.cast(tf.stack([top, left]), tf.float32)
    # Output pixel i sits at source coordinate (offset + i + 0.5) / s - 0.5 (half-pixel centres,
    # as in tf.image.resize); crop_and_resize wants the first and last sample in units of
    # (size - 1).
    factor = scaled / size
    first = (offset + 0.5) / factor - 0.5
    last = first + (crop - 1.0) / factor
    denominator = tf.maximum(size - 1.0, 1.0)
    box = tf.concat([first / denominator, last / denominator], 0)[None]  # [[y1, x1, y2, x2]]
    # Source values are >= 0, so -1 marks samples outside the image; they become the mean.
    out = tf.image.crop_and_resize(image[None], box, [0], crop_size, method="bilinear",
                                   extrapolation_value=-1.0)[0]
    out = tf.where(out < 0.0, tf.constant(IMAGENET_MEAN_RGB, tf.float32), out)
    out_label = tf.image.crop_and_resize(
        tf.cast(label, tf.float32)[None, :, :, None], box, [0], crop_size, method="nearest",
        extrapolation_value=float(IGNORE_LABEL))[0, :, :, 0]
    out.set_shape([crop_size[0], crop_size[1], 3])
    return out, tf.cast(out_label, tf.int32)


def augment(image, label, seed, *, crop_size, scale_range=SCALE_RANGE, flip=True, jitter=False):
    """The training augmentation: random scale, crop with padding, flip, optional jitter.

    Takes uint8 or float inputs; returns image float32 (crop_size + (3,)) and label int32.
    """
    seeds = tf.random.experimental.stateless_split(seed, 4)
    if scale_range is not None and tuple(scale_range) != (1.0, 1.0):
        image, label = random_scale_crop(image, label, seeds[0], crop_size, scale_range)
    else:
        image, label = random_crop(tf.cast(image, tf.float32), tf.cast(label, tf.int32),
                                   seeds[1], crop_size)
    if flip:
        image, label = random_flip(image, label, seeds[2])
    if jitter:
        image = photometric_jitter(image, seeds[3])
    return image, label
