"""Generative VLMs I (chapter 04): models that both match and describe an image.

BLIP's multimodal mixture of encoder-decoder (:mod:`.med`) and its three losses (:mod:`.blip`, :mod:`.losses`),
CoCa (:mod:`.coca`) and CapFilt's data bootstrapping (:mod:`.capfilt`). Decoding lives in
:mod:`vlm_primer.nn.decoding`. Explained in notebook 04.
"""

from vlm_primer.generative.blip import BLIP_VIT, Blip, BlipConfig, CaptionStepper
from vlm_primer.generative.losses import hard_negatives, itc_loss, momentum_update
from vlm_primer.generative.med import MED, MED_MODES, MEDConfig, MEDLayer

__all__ = ["BLIP_VIT", "Blip", "BlipConfig", "CaptionStepper", "MED", "MED_MODES", "MEDConfig", "MEDLayer",
           "hard_negatives", "itc_loss", "momentum_update"]
