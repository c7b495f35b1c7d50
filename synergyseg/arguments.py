"""Command-line value types shared by the entry points (train.py, evaluate.py, export, predict)."""

import argparse


def image_size(text):
    """An argparse type for "HEIGHTxWIDTH" (e.g. "512x1024") -> (height, width), both positive."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH like 512x1024, got {text!r}") from None
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return height, width
