"""Draws the README's picture: a scene, the prediction over it and the low scale's uncertainty.

    python docs/figure.py runs/synthetic                 # writes docs/overlay.png
    python docs/figure.py MODEL --image docs/scene.jpg --out docs/overlay.png

MODEL is anything `synergyseg.Segmenter` loads (a run folder, `.keras`, SavedModel, `.tflite`) of a
two-scale model. The three panels side by side: the image, its class colours blended over it
(opacity 0.5), and the uncertainty `U(1 - max_c S_lo)` in gray (white = the low scale is unsure,
where eq. 1 hands the pixel to the full-resolution scale).
"""

import argparse
import os
import sys

import numpy as np
from PIL import Image

import synergyseg
from synergyseg.atomic import atomic_output
from synergyseg.predict import uncertainty_image

HERE = os.path.dirname(os.path.abspath(__file__))


def panels(segmenter, image):
    """`(H, 3 W, 3)` uint8: image | overlay | uncertainty (gray as RGB)."""
    result = segmenter.predict(image)
    if result.uncertainty is None:
        raise ValueError(f"{segmenter.source} gives no uncertainty: the picture needs a two-scale model")
    blended = segmenter.overlay(image, result.class_map, opacity=0.5)
    gray = np.repeat(uncertainty_image(result.uncertainty)[..., None], 3, axis=-1)
    return np.concatenate([image, blended, gray], axis=1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="run folder, .keras, SavedModel or .tflite of a two-scale model")
    parser.add_argument("--image", default=os.path.join(HERE, "scene.jpg"))
    parser.add_argument("--out", default=os.path.join(HERE, "overlay.png"))
    args = parser.parse_args(argv)
    try:
        image = np.asarray(Image.open(args.image).convert("RGB"))
        picture = panels(synergyseg.Segmenter(args.model), image)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    with atomic_output(args.out) as tmp:
        Image.fromarray(picture).save(tmp, format="PNG")
    print(f"wrote {args.out} ({picture.shape[1]}x{picture.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
