"""Label maps at the label's resolution from a model, optionally with flip test-time augmentation."""

import tensorflow as tf

from synergyseg.evaluation.ablation import ScaleFusions
from synergyseg.models.synergy import SynergySeg
from synergyseg.models.names import FUSED, UNCERTAINTY

# The key of the model's own prediction (its saved fusion) in a Predictor's output.
MODEL_KEY = "model"
# Not "uncertainty": that is the name of eq. 1's fusion in the ablation.
UNCERTAINTY_KEY = "uncertainty_mask"


def is_two_scale(model):
    """True for a SynergySeg model, False for a single-scale one."""
    return isinstance(model, SynergySeg)


class Predictor:
    """Runs a segmentation model on batches and returns class maps for its fusion and an ablation.

    One forward pass (two with `flip`) gives the model's own prediction ("model"), every fusion in
    `fusions` computed from the same scale outputs, and the low scale's uncertainty mask
    ("uncertainty_mask").
    Probabilities are resized bilinearly to `size` (the label's size) before the argmax, so an
    image evaluated at a resize factor is still scored at full resolution.

    Args:
        model: a SynergySeg model, or any model mapping (B, H, W, 3) RGB to (B, H, W, C)
            probabilities (then `fusions` must be empty and there is no uncertainty mask).
        fusions: weightless fusion names for the ablation (see `ScaleFusions`).
        flip: also run the horizontally flipped image and average the probabilities (flipped
            back) of both passes; each fusion is averaged after fusing, as a flipped
            `with_fusion(model, name)` would be.

    Example:
        >>> predictor = Predictor(model, fusions=("low", "high"), flip=True)
        >>> out = predictor(images, label_size)   # {"model": (B, H, W) uint8, "low": ..., ...}
    """

    def __init__(self, model, fusions=(), flip=False):
        self.two_scale = is_two_scale(model)
        if fusions and not self.two_scale:
            raise ValueError(
                f"model {model.name!r} is single-scale (not a SynergySeg); the fusion ablation "
                "needs a SynergySeg model")
        self.model = model.with_fusion(scale_outputs=True) if self.two_scale else model
        self.fusions = ScaleFusions(fusions) if fusions else None
        self.flip = flip
        self.keys = (MODEL_KEY,) + tuple(fusions)
        self._run = tf.function(self._labels, input_signature=[
            tf.TensorSpec((None, None, None, 3), tf.float32), tf.TensorSpec((2,), tf.int32)])

    def __call__(self, images, size):
        """`{key: (B, *size) uint8 class map}` plus "uncertainty_mask" `(B, *size)` float32 if two-scale."""
        out = self._run(tf.cast(images, tf.float32), tf.cast(size, tf.int32))
        return {k: v.numpy() for k, v in out.items()}

    def _probabilities(self, images):
        outputs = self.model(images, training=False)
        if not self.two_scale:
            return {MODEL_KEY: tf.cast(outputs, tf.float32)}
        outputs = {k: tf.cast(v, tf.float32) for k, v in outputs.items()}
        probabilities = {MODEL_KEY: outputs[FUSED], UNCERTAINTY_KEY: outputs[UNCERTAINTY]}
        if self.fusions is not None:
            probabilities.update(self.fusions(outputs))
        return probabilities

    def _labels(self, images, size):
        probabilities = self._probabilities(images)
        if self.flip:
            mirrored = self._probabilities(tf.reverse(images, [2]))
            probabilities = {k: 0.5 * (v + tf.reverse(mirrored[k], [2])) for k, v in probabilities.items()}
        same_size = tf.reduce_all(tf.equal(tf.shape(images)[1:3], size))
        labels = {}
        for key, p in probabilities.items():
            # Resizing to the same size would be the identity; skipping it keeps the ablation's
            # numbers bit-equal to `with_fusion` predictions.
            p = tf.cond(same_size, lambda p=p: p, lambda p=p: tf.image.resize(p, size, "bilinear"))
            if key == UNCERTAINTY_KEY:
                labels[key] = p[..., 0]
            else:
                labels[key] = tf.cast(tf.argmax(p, axis=-1, output_type=tf.int32), tf.uint8)
        return labels
