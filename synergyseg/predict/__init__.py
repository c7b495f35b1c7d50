"""Segment your own pictures and videos with a trained model in any saved form.

    import synergyseg
    segmenter = synergyseg.Segmenter("runs/synthetic")     # run folder, .keras, SavedModel, .tflite
    result = segmenter.predict("street.jpg")               # result.class_map at the picture's size

or from the shell: `python -m synergyseg.predict runs/synthetic photos/ drive.mp4 --out predictions`.
"""

from synergyseg.predict.files import PredictOptions, output_paths, predict_files
from synergyseg.predict.render import overlay, uncertainty_image
from synergyseg.predict.segmenter import Segmentation, Segmenter

__all__ = ["PredictOptions", "Segmentation", "Segmenter", "output_paths", "overlay",
           "predict_files", "uncertainty_image"]
