"""Evaluation: zero-shot classification, retrieval and caption probes (notebook 02), captioning metrics (notebook
04), seed verdicts (notebook 05), the linear probe (notebook 03); and chapter 07's harness (``evaluate(model,
suite)`` over the suites of :mod:`vlm_primer.evaluation.suites`, each with its blind baseline and bootstrap
interval) with every metric equal to its official code: VQA accuracy, ANLS, CLIPScore, POPE, CHAIR, WEAT,
Winoground, bootstrap intervals; a planted bias (``bias``), déjà vu memorization (``memorization``) and red teaming
(the ``redteam`` suite and :func:`verify_premises`)."""

from vlm_primer.evaluation.bias import SpuriousCaptionDataset, tint_association, tint_disparity
from vlm_primer.evaluation.captioning import bleu, caption_scores, cider_d, meteor, rouge_l, simple_tokenize
from vlm_primer.evaluation.clipscore import clip_score, pair_cosines, ref_clip_score
from vlm_primer.evaluation.hallucination import chair, mentioned_objects, parse_yes_no, pope_metrics
from vlm_primer.evaluation.harness import (CAPABILITIES, EvalModel, MissingCapability, evaluate, leaderboard,
                                           plot_leaderboard, wrap)
from vlm_primer.evaluation.memorization import dejavu_gap, dejavu_sets, recovery_rates, text_randomization
from vlm_primer.evaluation.linear_probe import LinearProbe, linear_probe
from vlm_primer.evaluation.probes import PROBE_KINDS, CaptionProbe, caption_probe, pair_similarity, probe_scores
from vlm_primer.evaluation.retrieval import first_hit_rank, recall_at_k, retrieval_metrics
from vlm_primer.evaluation.seeds import seed_verdict
from vlm_primer.evaluation.suites.redteam import verify_premises
from vlm_primer.evaluation.stats import (bootstrap_ci, paired_bootstrap_diff, weat_effect_size, weat_test,
                                         winoground_outcomes, winoground_scores)
from vlm_primer.evaluation.vqa_metrics import anls, anls_score, normalize_answer, vqa_accuracy, vqa_score
from vlm_primer.evaluation.zeroshot import build_classifier, zero_shot_accuracy, zero_shot_classify

__all__ = [
    "SpuriousCaptionDataset", "tint_association", "tint_disparity", "dejavu_gap", "dejavu_sets", "recovery_rates",
    "text_randomization", "verify_premises",
    "bleu", "caption_scores", "cider_d", "meteor", "rouge_l", "simple_tokenize",
    "clip_score", "pair_cosines", "ref_clip_score", "chair", "mentioned_objects", "parse_yes_no", "pope_metrics",
    "CAPABILITIES", "EvalModel", "MissingCapability", "evaluate", "leaderboard", "plot_leaderboard", "wrap",
    "LinearProbe", "linear_probe", "PROBE_KINDS", "CaptionProbe", "caption_probe", "pair_similarity", "probe_scores",
    "build_classifier", "first_hit_rank", "recall_at_k", "retrieval_metrics", "seed_verdict",
    "bootstrap_ci", "paired_bootstrap_diff", "weat_effect_size", "weat_test", "winoground_outcomes",
    "winoground_scores", "anls", "anls_score", "normalize_answer", "vqa_accuracy", "vqa_score",
    "zero_shot_accuracy", "zero_shot_classify",
]
