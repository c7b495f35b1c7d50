"""Pictures of a prediction: the overlay on the input and the uncertainty map as gray levels."""

import numpy as np

DEFAULT_OPACITY = 0.5


def overlay(image, colors, opacity=DEFAULT_OPACITY):
    """`(1 - opacity) * image + opacity * colors`, rounded to uint8; both (H, W, 3) RGB.

    Example:
        >>> overlay(np.zeros((2, 2, 3), np.uint8), np.full((2, 2, 3), 200, np.uint8), 0.5)[0, 0]
        array([100, 100, 100], dtype=uint8)
    """
    if not 0 <= opacity <= 1:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    image, colors = np.asarray(image, np.float32), np.asarray(colors, np.float32)
    if image.shape != colors.shape:
        raise ValueError(f"image {image.shape} and colour map {colors.shape} differ in size")
    return np.clip(np.round((1 - opacity) * image + opacity * colors), 0, 255).astype(np.uint8)


def uncertainty_image(uncertainty):
    """(H, W) uncertainty in [0, 1] -> (H, W) uint8 gray levels (0 certain, 255 most uncertain)."""
    return np.clip(np.round(np.asarray(uncertainty, np.float32) * 255), 0, 255).astype(np.uint8)
