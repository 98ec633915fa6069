"""Contrastive vision-language models (survey §2.2, notebook 02): CLIP, SigLIP, Llip and their losses."""

from vlm_primer.contrastive.clip import CLIP, CLIPConfig, CLIPOutput
from vlm_primer.contrastive.llip import Llip, LlipConfig, LlipOutput
from vlm_primer.contrastive.losses import (ClipLoss, SigLipLoss, all_gather_with_grad, clip_loss, nt_xent_loss,
                                         siglip_loss)
from vlm_primer.contrastive.siglip import SigLIP, SigLIPConfig, SigLIPOutput

__all__ = [
    "CLIP", "CLIPConfig", "CLIPOutput", "ClipLoss", "Llip", "LlipConfig", "LlipOutput", "SigLIP", "SigLIPConfig",
    "SigLIPOutput", "SigLipLoss", "all_gather_with_grad", "clip_loss", "nt_xent_loss", "siglip_loss",
]
