"""Test-wide settings: offline, deterministic, one torch thread per xdist worker."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests never depend on the auto-picked device: "auto" means the CPU here even where a GPU is visible
# (GPU paths have their own tests, marked to skip without CUDA). VLM_PRIMER_DEVICE=auto runs them on the GPU.
os.environ.setdefault("VLM_PRIMER_DEVICE", "cpu")

import pytest  # noqa: E402
import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    from vlm_primer.utils import seed_everything

    seed_everything(0)
    yield


# Property-based tests (tests/test_properties.py): the same examples on every run and machine, a
# fixed budget so `make test` stays fast, no example database written into the checkout.
# HYPOTHESIS_PROFILE=thorough searches harder (and randomly) when working on validation.
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("ci", derandomize=True, max_examples=60, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("thorough", max_examples=2000, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
