"""Evaluation: streaming confusion matrix and IoU, fusion ablation, speed, figures, Cityscapes files.

    from synergyseg.evaluation import ConfusionMatrix, Predictor, evaluate_batches
    matrices = evaluate_batches(Predictor(model, fusions=ABLATION_FUSIONS), batches, num_classes=19)
    matrices["uncertainty"].scores().mean_iou
"""

from synergyseg.evaluation.ablation import ABLATION_FUSIONS, ScaleFusions
from synergyseg.evaluation.cityscapes_results import (
    CityscapesResultWriter, result_path, train_ids_to_label_ids, write_result)
from synergyseg.evaluation.confusion import ConfusionMatrix, Scores, scores_from_confusion
from synergyseg.evaluation.evaluate_model import EvaluationOptions, evaluate_model
from synergyseg.evaluation.evaluator import ExampleCollector, evaluate_batches, validation_batches
from synergyseg.evaluation.predictor import MODEL_KEY, Predictor, is_two_scale
from synergyseg.evaluation.speed import device_name, measure

__all__ = [
    "ABLATION_FUSIONS", "CityscapesResultWriter", "ConfusionMatrix", "EvaluationOptions",
    "ExampleCollector", "MODEL_KEY", "Predictor", "ScaleFusions", "Scores", "device_name",
    "evaluate_batches", "evaluate_model", "is_two_scale", "measure", "result_path",
    "scores_from_confusion", "train_ids_to_label_ids", "validation_batches", "write_result",
]
