"""vlm-primer: vision-language models from scratch, in sync with the book in ``notebooks/``."""

import os as _os
import sys as _sys

if "torch" not in _sys.modules:  # torch reads it once, when it loads: see vlm_primer.utils.default_device
    _os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")

from vlm_primer.utils import default_device, get_scale, get_seed, seed_everything

__version__ = "0.1.0"
__all__ = ["default_device", "get_scale", "get_seed", "seed_everything", "__version__"]
