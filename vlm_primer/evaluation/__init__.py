"""Evaluation: zero-shot classification, retrieval and caption probes (notebook 02), captioning metrics (notebook
04), seed verdicts (notebook 05), the linear probe (notebook 03); reused by chapter 07."""

from vlm_primer.evaluation.captioning import bleu, caption_scores, cider_d, meteor, rouge_l, simple_tokenize
from vlm_primer.evaluation.linear_probe import LinearProbe, linear_probe
from vlm_primer.evaluation.probes import PROBE_KINDS, CaptionProbe, caption_probe, pair_similarity, probe_scores
from vlm_primer.evaluation.retrieval import first_hit_rank, recall_at_k, retrieval_metrics
from vlm_primer.evaluation.seeds import seed_verdict
from vlm_primer.evaluation.zeroshot import build_classifier, zero_shot_accuracy, zero_shot_classify

__all__ = [
    "bleu", "caption_scores", "cider_d", "meteor", "rouge_l", "simple_tokenize",
    "LinearProbe", "linear_probe", "PROBE_KINDS", "CaptionProbe", "caption_probe", "pair_similarity", "probe_scores",
    "build_classifier", "first_hit_rank", "recall_at_k", "retrieval_metrics", "seed_verdict",
    "zero_shot_accuracy", "zero_shot_classify",
]
