"""vlm-primer: vision-language models from scratch, in sync with the book in ``notebooks/``."""

from vlm_primer.utils import default_device, get_scale, get_seed, seed_everything

__version__ = "0.1.0"
__all__ = ["default_device", "get_scale", "get_seed", "seed_everything", "__version__"]
