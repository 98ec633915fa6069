"""Generative VLMs (chapters 04 and 04b).

Chapter 04, models that both match and describe an image: BLIP's multimodal mixture of encoder-decoder (:mod:`.med`)
and its three losses (:mod:`.blip`, :mod:`.losses`), CoCa (:mod:`.coca`) and CapFilt's data bootstrapping
(:mod:`.capfilt`). Decoding lives in :mod:`vlm_primer.nn.decoding`. Explained in notebook 04.

Chapter 04b, models that draw an image from a caption: the VQ-VAE image tokenizer (:mod:`.vqvae`), the early-fusion
transformer over text and image tokens (:mod:`.early_fusion`), the DDPM/DDIM schedule and samplers
(:mod:`.diffusion`), the text-conditioned DiT (:mod:`.dit`), and generative classifiers (:mod:`.classifiers`).
Explained in notebook 04b.
"""

from vlm_primer.generative.blip import BLIP_VIT, Blip, BlipConfig, CaptionStepper
from vlm_primer.generative.classifiers import (autoregressive_scores, diffusion_pair_scores, diffusion_scores,
                                               posterior)
from vlm_primer.generative.diffusion import NoiseSchedule, add_noise, ddim_step, ddpm_step, inference_timesteps
from vlm_primer.generative.dit import DiT, DiTConfig
from vlm_primer.generative.early_fusion import EarlyFusion, EarlyFusionConfig
from vlm_primer.generative.losses import hard_negatives, itc_loss, momentum_update
from vlm_primer.generative.med import MED, MED_MODES, MEDConfig, MEDLayer
from vlm_primer.generative.vqvae import VQVAE, VectorQuantizer, VQVAEConfig

__all__ = ["BLIP_VIT", "Blip", "BlipConfig", "CaptionStepper", "DiT", "DiTConfig", "EarlyFusion", "EarlyFusionConfig",
           "MED", "MED_MODES", "MEDConfig", "MEDLayer", "NoiseSchedule", "VQVAE", "VQVAEConfig", "VectorQuantizer",
           "add_noise", "autoregressive_scores", "ddim_step", "ddpm_step", "diffusion_pair_scores", "diffusion_scores",
           "hard_negatives", "inference_timesteps", "itc_loss", "momentum_update", "posterior"]
