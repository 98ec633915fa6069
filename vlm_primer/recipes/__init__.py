"""Training recipes I (chapter 06, survey §3.1–3.3): the data a VLM learns from and the compute it costs.

* :mod:`vlm_primer.recipes.data` — balance (concept frequencies), noise like web alt-text, exact and semantic
  deduplication, pruning by CLIPScore, synthetic captions; every cleaning method scored against known labels.
* :mod:`vlm_primer.recipes.compute` — FLOPs, memory, GPU-hours and GPU counts of any preset, checked against
  ``torch.utils.flop_counter``.
"""

from vlm_primer.recipes.compute import GPUS, budget, flops, memory, survey_claims
from vlm_primer.recipes.data import (WEB_NOISE, ConceptFrequencyDataset, caption_truth, concept_weights,
                                     duplicate_report, embed_images, exact_duplicates, frequency_table, inject_noise,
                                     keep_random, keep_top, kmeans, plant_duplicates, recaption, removal_report,
                                     semantic_duplicates)

__all__ = ["GPUS", "WEB_NOISE", "ConceptFrequencyDataset", "budget", "caption_truth", "concept_weights",
           "duplicate_report", "embed_images", "exact_duplicates", "flops", "frequency_table", "inject_noise",
           "keep_random", "keep_top", "kmeans", "memory", "plant_duplicates", "recaption", "removal_report",
           "semantic_duplicates", "survey_claims"]
