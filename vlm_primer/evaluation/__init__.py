"""Evaluation: zero-shot classification and retrieval (notebook 02), reused by the evaluation chapter (07)."""

from vlm_primer.evaluation.retrieval import first_hit_rank, recall_at_k, retrieval_metrics
from vlm_primer.evaluation.zeroshot import build_classifier, zero_shot_accuracy, zero_shot_classify

__all__ = [
    "build_classifier", "first_hit_rank", "recall_at_k", "retrieval_metrics", "zero_shot_accuracy",
    "zero_shot_classify",
]
