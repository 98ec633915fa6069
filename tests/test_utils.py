"""The shared helpers: seeding, the scale knob, presets and input checks."""

import dataclasses
import warnings
from typing import ClassVar

import numpy as np
import pytest
import torch

from vlm_primer import default_device, get_scale, get_seed, seed_everything
from vlm_primer.config import PresetConfig
from vlm_primer.validate import check_choice, check_images, check_same_batch, check_tokens


@dataclasses.dataclass
class Toy(PresetConfig):
    width: int = 1
    depth: int = 1
    PRESETS: ClassVar[dict] = {"tiny": dict(width=8), "small": dict(width=16), "base": dict(width=32, depth=2)}


def test_seed_everything_repeats():
    seed_everything(3)
    a = (torch.rand(3), np.random.rand(3))
    g = seed_everything(3)
    b = (torch.rand(3), np.random.rand(3))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert torch.equal(torch.rand(2, generator=g), torch.rand(2, generator=seed_everything(3)))
    with pytest.raises(TypeError, match="seed must be an int"):
        seed_everything("3")
    with pytest.raises(TypeError, match=r"seed must be an int, got 3.0 \(float\)"):
        seed_everything(3.0)
    assert torch.equal(torch.rand(2, generator=seed_everything(np.int64(3))), torch.rand(2, generator=g.manual_seed(3)))


def test_scale_knob(monkeypatch):
    monkeypatch.delenv("VLM_PRIMER_SCALE", raising=False)
    assert get_scale() == "tiny" and Toy.from_preset().width == 8
    monkeypatch.setenv("VLM_PRIMER_SCALE", "base")
    assert Toy.from_preset() == Toy(width=32, depth=2)
    monkeypatch.setenv("VLM_PRIMER_SCALE", "huge")
    with pytest.raises(ValueError, match="VLM_PRIMER_SCALE must be one of"):
        get_scale()


def test_seed_knob(monkeypatch):
    monkeypatch.delenv("VLM_PRIMER_SEED", raising=False)
    assert get_seed() == 0 and get_seed(5) == 5
    monkeypatch.setenv("VLM_PRIMER_SEED", " 3 ")
    assert get_seed() == 3
    for bad in ("-1", "two", "1.5"):
        monkeypatch.setenv("VLM_PRIMER_SEED", bad)
        with pytest.raises(ValueError, match="VLM_PRIMER_SEED must be a non-negative integer"):
            get_seed()


def test_presets_and_overrides():
    assert Toy.from_preset("small", depth=5) == Toy(width=16, depth=5)
    with pytest.raises(ValueError, match="unknown preset 'xl' for Toy"):
        Toy.from_preset("xl")
    with pytest.raises(TypeError, match="no field"):
        Toy.from_preset("tiny", colour=1)


def test_default_device(monkeypatch):
    assert default_device("cpu").type == "cpu"
    monkeypatch.delenv("VLM_PRIMER_DEVICE", raising=False)
    assert default_device("auto").type in {"cpu", "cuda", "mps"}
    monkeypatch.setenv("VLM_PRIMER_DEVICE", "cpu")          # what the test suite sets (tests/conftest.py)
    assert default_device("auto").type == "cpu" and default_device(None).type == "cpu"
    assert default_device("cpu").type == "cpu"              # an explicit device is never overridden
    monkeypatch.setenv("VLM_PRIMER_DEVICE", "gpu")
    with pytest.raises(ValueError, match="VLM_PRIMER_DEVICE='gpu'.*must be one of"):
        default_device("auto")
    if not torch.cuda.is_available():
        monkeypatch.setenv("VLM_PRIMER_DEVICE", "cuda")
        with pytest.raises(ValueError, match="VLM_PRIMER_DEVICE='cuda'.*no CUDA GPU"):
            default_device("auto")


def test_mps_without_the_cpu_fallback_is_said_once(monkeypatch, recwarn):
    from vlm_primer import utils

    monkeypatch.delenv("VLM_PRIMER_DEVICE", raising=False)
    monkeypatch.setattr(utils.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(utils, "_mps_available", lambda: True)  # a Mac, as far as default_device can tell
    monkeypatch.setattr(utils, "_MPS_WARNED", False)
    monkeypatch.setenv("PYTORCH_ENABLE_MPS_FALLBACK", "1")
    assert default_device("auto").type == "mps" and not recwarn.list  # the fallback is on: nothing to say
    monkeypatch.delenv("PYTORCH_ENABLE_MPS_FALLBACK")
    with pytest.warns(UserWarning, match="PYTORCH_ENABLE_MPS_FALLBACK=1"):
        assert default_device("auto").type == "mps"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process: a second warning would raise here
        assert default_device("auto").type == "mps"


def test_importing_the_package_first_turns_the_mps_fallback_on():
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PYTORCH_ENABLE_MPS_FALLBACK"}
    read = "import os; print(os.environ.get('PYTORCH_ENABLE_MPS_FALLBACK'))"
    first = subprocess.run([sys.executable, "-c", f"import vlm_primer; {read}"], env=env, capture_output=True,
                           text=True, check=True).stdout.split()
    late = subprocess.run([sys.executable, "-c", f"import torch, vlm_primer; {read}"], env=env, capture_output=True,
                          text=True, check=True).stdout.split()
    assert first == ["1"] and late == ["None"]  # too late once torch is loaded: default_device says so instead

def test_check_images_errors():
    ok = torch.rand(2, 3, 8, 8)
    assert check_images(ok, size=8) is ok
    with pytest.raises(ValueError, match=r"shape \(B, 3, H, W\), got shape \(3, 8, 8\)"):
        check_images(torch.rand(3, 8, 8))
    with pytest.raises(TypeError, match="floating-point.*uint8"):
        check_images(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="empty batch"):
        check_images(torch.rand(0, 3, 8, 8))
    with pytest.raises(ValueError, match="3 channels"):
        check_images(torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match="16x16"):
        check_images(ok, size=16)
    with pytest.raises(TypeError, match="torch.Tensor"):
        check_images(np.zeros((2, 3, 8, 8)))


def test_check_tokens_and_batches():
    ids = torch.ones(2, 5, dtype=torch.long)
    assert check_tokens(ids, max_len=5, vocab_size=2) is ids
    with pytest.raises(ValueError, match="length 5, longer than the model's context of 4"):
        check_tokens(ids, max_len=4)
    with pytest.raises(ValueError, match=r"outside \[0, 1\)"):
        check_tokens(ids, vocab_size=1)
    with pytest.raises(TypeError, match="integer"):
        check_tokens(ids.float())
    with pytest.raises(ValueError, match="empty batch"):
        check_tokens(torch.ones(0, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="mismatched batch sizes: images=2, input_ids=3"):
        check_same_batch(images=torch.rand(2, 3), input_ids=torch.ones(3, 1))
    assert check_same_batch(a=torch.rand(4), b=None) == 4
    with pytest.raises(ValueError, match="pool must be one of"):
        check_choice("max", ("cls", "mean"), "pool")


def test_seed_verdict_needs_every_seed_on_one_side():
    import pytest

    from vlm_primer.evaluation import seed_verdict

    assert seed_verdict([0.6, 0.62, 0.61], [0.5, 0.55, 0.59]) == "higher"
    assert seed_verdict([0.4, 0.42, 0.41], [0.5, 0.55, 0.59]) == "lower"
    assert seed_verdict([0.6, 0.5, 0.61], [0.5, 0.55, 0.59]) == "within the seed spread"
    assert seed_verdict([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]) == "within the seed spread"  # ties are no finding
    with pytest.raises(ValueError, match="at least 3"):
        seed_verdict([0.6, 0.7], [0.5, 0.5, 0.5])
