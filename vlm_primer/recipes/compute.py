"""The compute budget: FLOPs, memory, GPU-hours and GPU counts of the book's transformer models.

Explained in notebook 06, §The compute budget. Survey §3.2.2 asks "how many GPUs do I need?"; the answer is
arithmetic. A forward pass costs ``2·N`` FLOPs per token for ``N`` matmul weights (one multiply and one add each),
plus attention: the scores ``QKᵀ`` and their use ``AV`` cost ``2·2·s·d`` per token of a layer of width ``d`` that
attends over ``s`` tokens. Training adds a backward pass of twice the forward (gradients for the activations and
for the weights): the ``6·N·D`` rule. :func:`flops` counts this per part of a model and matches
``torch.utils.flop_counter.FlopCounterMode`` on our CLIP and SigLIP; :func:`memory` adds up weights, gradients,
optimizer state and activations (Korthikanti et al. 2022); :func:`budget` turns both into GPU-hours and GPU
counts on the :data:`GPUS` table; :func:`survey_claims` redoes the survey's orders of magnitude with every
assumption written in its row.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
from torch import nn

from vlm_primer.contrastive import CLIP, CLIPConfig, SigLIP, SigLIPConfig
from vlm_primer.nn import DecoderConfig, DecoderLM, TextConfig, TextTransformer, ViT, ViTConfig
from vlm_primer.validate import check_int

__all__ = ["GPU", "GPUS", "Budget", "FlopCount", "Memory", "Part", "budget", "clip_vit_l14", "flops", "gpu_of",
           "memory", "survey_claims"]

MODELS = {CLIPConfig: CLIP, SigLIPConfig: SigLIP, ViTConfig: ViT, TextConfig: TextTransformer, DecoderConfig: DecoderLM}
BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
OPTIMIZER_BYTES = {"adamw": 8, "sgd": 4, "none": 0}  # fp32 state per parameter: Adam's m and v; SGD's momentum


@dataclass(frozen=True)
class GPU:
    name: str
    tflops: float        # dense 16-bit tensor-core peak, TFLOP/s (no 2:4 sparsity)
    tflops_fp32: float   # dense fp32 peak (TF32 tensor cores where the GPU has them)
    memory_gib: float
    bf16: bool = True


# NVIDIA datasheets (SXM parts). V100: 125 TFLOP/s fp16 tensor, 15.7 fp32, 32 GB, no bf16 (the CLIP paper trained
# in fp16). A100: 312 bf16/fp16, 156 TF32, 40 or 80 GB. H100 SXM: 989 bf16, 495 TF32, 80 GB. H200: the H100's
# compute with 141 GB of HBM3e. Memory is the vendor's figure, read as GiB (nvidia-smi shows 81,920 MiB on an
# A100-80GB; the H200's 141 GB is ~140 GiB).
GPUS = {g.name: g for g in [
    GPU("V100", 125.0, 15.7, 32, bf16=False),
    GPU("A100-40GB", 312.0, 156.0, 40),
    GPU("A100-80GB", 312.0, 156.0, 80),
    GPU("H100-80GB", 989.0, 495.0, 80),
    GPU("H200", 989.0, 495.0, 141),
]}


def gpu_of(device_name: str) -> GPU | None:
    """The :data:`GPUS` row of a device as ``torch.cuda.get_device_name()`` names it ("NVIDIA H100 80GB HBM3",
    "NVIDIA A100-SXM4-40GB", "Tesla V100-SXM2-32GB"), or None for a GPU the table does not know. The rows are
    SXM figures: a PCIe part is slower, so an MFU computed from them reads low there."""
    name = device_name.upper()
    for key, row in (("H200", "H200"), ("H100", "H100-80GB"), ("V100", "V100")):
        if key in name:
            return GPUS[row]
    if "A100" in name:
        return GPUS["A100-80GB" if "80G" in name else "A100-40GB"]
    return None


# ----------------------------------------------------------------------------- input checks

def _positive(value, name: str):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return value


def _choice(value, choices, name: str):
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {sorted(choices)}")
    return value


def _mask_ratio(value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"mask_ratio must lie in [0, 1), got {value!r}")
    return float(value)


def _config(model_or_config):
    """The config of a model or a config; a ``TypeError`` for anything this calculator does not know."""
    cfg = getattr(model_or_config, "cfg", None) if isinstance(model_or_config, nn.Module) else model_or_config
    if not isinstance(cfg, tuple(MODELS)):
        names = ", ".join(f"{m.__name__}/{c.__name__}" for c, m in MODELS.items())
        raise TypeError(f"cannot count {type(model_or_config).__name__}: pass one of {names}")
    if isinstance(cfg, DecoderConfig) and cfg.cross_attn_every:
        raise ValueError("decoders with cross-attention (cross_attn_every > 0) are not covered: their cost "
                         "depends on the context they attend to")
    return cfg


# ----------------------------------------------------------------------------- the transformer stacks

@dataclass(frozen=True)
class _Stack:
    """``depth`` pre-LN blocks of width ``dim`` run on ``tokens`` tokens per sample."""
    depth: int
    tokens: int
    dim: int
    heads: int
    inner: int       # heads x head dim (queries, attention output)
    kv_inner: int    # kv_heads x head dim (keys, values: smaller with grouped-query attention)
    mlp_dim: int
    act: str

    @property
    def block_params(self) -> int:
        """Matmul weights of one block: q and out ``2·dim·inner``, k and v ``2·dim·kv_inner``, the MLP
        ``2·dim·mlp_dim`` (3 matrices for SwiGLU). ``12·d²`` for the classic block."""
        mlp = (3 if self.act == "swiglu" else 2) * self.dim * self.mlp_dim
        return 2 * self.dim * self.inner + 2 * self.dim * self.kv_inner + mlp


def _mlp_dim(cfg) -> int:
    return cfg.mlp_dim or int(cfg.dim * cfg.mlp_ratio)


def _kept_tokens(cfg: ViTConfig, mask_ratio: float) -> int:
    """Tokens through the image tower: FLIP/MAE keep ``int(patches·(1 - mask_ratio))`` patches, plus [CLS]."""
    kept = int(cfg.num_patches * (1 - mask_ratio))
    if kept < 1:
        raise ValueError(f"mask_ratio={mask_ratio} keeps no patch out of {cfg.num_patches}")
    return kept + int(cfg.cls_token)


def _stacks(cfg, mask_ratio: float = 0.0, images: bool = True, texts: bool = True) -> dict[str, _Stack]:
    """The transformer stacks of a model, by part name (``vision``, ``text``, ``decoder``)."""
    def stack(c, tokens, inner=None, kv_inner=None):
        return _Stack(c.depth, tokens, c.dim, c.heads, inner or c.dim, kv_inner or c.dim, _mlp_dim(c), c.act)

    if isinstance(cfg, DecoderConfig):
        hd = cfg.head_dim
        return {"decoder": stack(cfg, cfg.context_length, cfg.heads * hd, (cfg.kv_heads or cfg.heads) * hd)}
    vision = cfg if isinstance(cfg, ViTConfig) else getattr(cfg, "vision", None)
    text = cfg if isinstance(cfg, TextConfig) else getattr(cfg, "text", None)
    out = {}
    if vision is not None and images:
        out["vision"] = stack(vision, _kept_tokens(vision, mask_ratio))
    if text is not None and texts:
        out["text"] = stack(text, text.context_length)  # captions padded to the context: the padding is computed too
    return out


# ----------------------------------------------------------------------------- FLOPs

def _attention_flops(q_len: int, k_len: int, width: int) -> int:
    """``QKᵀ`` and ``AV``: two ``(q_len, width) x (width, k_len)``-sized matmuls, 2 FLOPs per multiply-add.
    A causal mask does not change it: the kernels compute the full square (FlopCounterMode counts it too)."""
    return 2 * 2 * q_len * k_len * width


@dataclass
class Part:
    """FLOPs of one part of a model. Built per sample for a forward pass, then scaled by :func:`flops`."""
    tokens: int               # tokens per sample through the part's blocks
    params: int               # matmul weights used: the N of 2·N·tokens (no biases, norms or embedding tables)
    matmul: float = 0.0       # weights x activations
    attention: float = 0.0    # QKᵀ and AV
    on_pixels: float = 0.0    # the part of `matmul` applied to the raw input (needs no input gradient)

    @property
    def total(self) -> float:
        return self.matmul + self.attention


def _stack_part(st: _Stack) -> Part:
    """Forward FLOPs per sample of a stack: ``2·N·s`` for the blocks' weights, ``4·depth·s²·inner`` for attention."""
    n = st.depth * st.block_params
    return Part(st.tokens, n, 2 * n * st.tokens, st.depth * _attention_flops(st.tokens, st.tokens, st.inner))


def _add(part: Part, params: int, tokens: int) -> None:
    """A weight matrix of ``params`` entries applied to ``tokens`` tokens of each sample."""
    part.params += params
    part.matmul += 2 * params * tokens


def _vision_part(cfg: ViTConfig, st: _Stack, embed_dim: int | None) -> Part:
    part = _stack_part(st)
    patch = cfg.channels * cfg.patch_size**2 * cfg.dim
    _add(part, patch, cfg.num_patches)  # every patch is embedded; masking (FLIP/MAE) drops tokens after that
    part.on_pixels = 2 * patch * cfg.num_patches
    if cfg.pool == "map":  # SigLIP's head: one probe query attends over the tokens, then an MLP on that query
        d = cfg.dim
        _add(part, 2 * d * d, st.tokens)  # keys and values of every token
        _add(part, 2 * d * d + (3 if cfg.act == "swiglu" else 2) * d * _mlp_dim(cfg), 1)  # query, out, MLP
        part.attention += _attention_flops(1, st.tokens, d)
    if embed_dim:
        _add(part, cfg.dim * embed_dim, 1)  # projection of the pooled vector
    return part


def _parts(cfg, batch: int, images: bool, texts: bool, mask_ratio: float) -> dict[str, Part]:
    """Forward FLOPs per sample of each part of ``cfg``."""
    stacks = _stacks(cfg, mask_ratio, images, texts)
    embed_dim = getattr(cfg, "embed_dim", None)
    parts = {}
    if "vision" in stacks:
        vision = cfg if isinstance(cfg, ViTConfig) else cfg.vision
        projection = embed_dim if isinstance(cfg, CLIPConfig) else None  # SigLIP's MAP head output is the embedding
        parts["vision"] = _vision_part(vision, stacks["vision"], projection)
    if "text" in stacks:
        parts["text"] = _stack_part(stacks["text"])
        if embed_dim:
            _add(parts["text"], cfg.text.dim * embed_dim, 1)  # projection (CLIP) or head (SigLIP) of the pooled token
    if "decoder" in stacks:
        parts["decoder"] = _stack_part(stacks["decoder"])
        _add(parts["decoder"], cfg.dim * cfg.vocab_size, cfg.context_length)  # the LM head is a matmul, tied or not
    if embed_dim and "vision" in parts and "text" in parts:
        parts["logits"] = Part(0, 0, matmul=2 * batch * embed_dim)  # each image against the batch's captions
    if not parts:
        raise ValueError(f"images={images} and texts={texts} leave nothing to count in a {type(cfg).__name__}")
    return parts


@dataclass
class FlopCount:
    """FLOPs of one step on ``batch`` samples, by part; ``train`` counts forward + backward."""
    parts: dict[str, Part]
    batch: int
    train: bool

    @property
    def total(self) -> float:
        return sum(p.total for p in self.parts.values())

    @property
    def params(self) -> int:
        return sum(p.params for p in self.parts.values())

    def __str__(self) -> str:
        kind = "train step (fwd+bwd)" if self.train else "forward"
        lines = [f"{kind}, batch {self.batch}: {self.total:.3e} FLOPs"]
        for name, p in self.parts.items():
            lines.append(f"  {name:8s} tokens {p.tokens:5d}  matmul params {p.params:13,d}  "
                         f"matmul {p.matmul:.3e}  attention {p.attention:.3e}")
        return "\n".join(lines)


def flops(model_or_config, batch: int, *, images: bool = True, texts: bool = True, train: bool = True,
          mask_ratio: float = 0.0) -> FlopCount:
    """Analytic FLOPs of one step on ``batch`` samples (image-text pairs, images, or sequences).

    Per part, forward: ``2·N·tokens`` for its ``N`` matmul weights (blocks ``12·d²`` per layer, patch embedding,
    pooling head, projection) plus ``2·2·layers·tokens²·width`` for attention; a contrastive model adds the
    ``2·B²·E`` similarity matrix. ``train=True`` triples everything (backward = 2x forward), except the patch
    embedding: the pixels need no gradient, so it costs 2x. ``images``/``texts`` pick a contrastive model's
    towers (``texts=False`` is ``encode_image``); ``mask_ratio`` drops image patches before the blocks (FLIP).
    Elementwise work (norms, GELU, softmax) is not counted, as in ``FlopCounterMode``.
    """
    cfg = _config(model_or_config)
    batch, mask_ratio = check_int(batch, "batch"), _mask_ratio(mask_ratio)
    parts = _parts(cfg, batch, images, texts, mask_ratio)
    for p in parts.values():
        matmul = 3 * p.matmul - p.on_pixels if train else p.matmul
        p.matmul, p.attention = batch * matmul, batch * p.attention * (3 if train else 1)
        p.on_pixels *= batch
    return FlopCount(parts, batch, train)


# ----------------------------------------------------------------------------- memory

def _parameter_count(model_or_config) -> int:
    """Every parameter of the model (embeddings, biases, norms too), from the model or a meta-device copy."""
    if isinstance(model_or_config, nn.Module):
        return sum(p.numel() for p in model_or_config.parameters())
    model_cls = next(m for c, m in MODELS.items() if isinstance(model_or_config, c))
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = model_cls(model_or_config)
    return sum(p.numel() for p in model.parameters())


def _activation_bytes(st: _Stack, batch: int, nbytes: int, checkpointing: bool) -> float:
    """Activations kept for the backward pass by ``st.depth`` blocks (Korthikanti et al. 2022, 16-bit):
    ``s·b·h·(34 + 5·a·s/h)`` per layer for a 4x MLP; for an MLP ratio ``r`` the 19 of the MLP becomes ``3 + 4r``,
    so ``s·b·h·(18 + 4r) + 5·a·s²·b``. A SwiGLU MLP also keeps its up projection and the gate's SiLU for their
    product: ``3 + 8r``. Keys and values are counted at full width, also with grouped-query attention. With
    checkpointing only each layer's input, ``2·s·b·h``, is kept (the layer being recomputed is transient). fp32
    activations take twice the bytes."""
    s, b, h, a = st.tokens, batch, st.dim, st.heads
    if checkpointing:
        per_layer = 2 * s * b * h
    else:
        mlp = 8 if st.act == "swiglu" else 4  # bytes per hidden unit and token at 16 bits
        per_layer = s * b * h * (18 + mlp * st.mlp_dim / h) + 5 * a * s * s * b
    return st.depth * per_layer * nbytes / 2


@dataclass
class Memory:
    """Bytes on one GPU that holds the whole model and ``batch`` samples' activations."""
    params: int
    batch: int
    weights: float
    grads: float
    optimizer: float
    activations: dict[str, float]

    @property
    def states(self) -> float:
        """Weights + gradients + optimizer state: what every data-parallel GPU holds whatever its batch."""
        return self.weights + self.grads + self.optimizer

    @property
    def total(self) -> float:
        return self.states + sum(self.activations.values())

    def __str__(self) -> str:
        gib = 2**30
        acts = ", ".join(f"{k} {v / gib:.2f}" for k, v in self.activations.items())
        return (f"{self.params:,d} params, batch {self.batch}: weights {self.weights / gib:.2f} GiB, grads "
                f"{self.grads / gib:.2f}, optimizer {self.optimizer / gib:.2f}, activations ({acts}); "
                f"total {self.total / gib:.2f} GiB")


def memory(model_or_config, batch: int, *, precision: str = "bf16", optimizer: str = "adamw",
           checkpointing: bool = False, mask_ratio: float = 0.0) -> Memory:
    """Training memory of ``batch`` samples on one GPU.

    Convention (ZeRO, Rajbhandari et al. 2020): ``fp32`` keeps 4-byte weights and gradients; ``bf16``/``fp16``
    (mixed precision) keep 2-byte weights and gradients *and* a 4-byte fp32 master copy of the weights, counted
    under ``optimizer`` with AdamW's fp32 ``m`` and ``v`` (8 bytes): 16 bytes per parameter either way.
    Activations: :func:`_activation_bytes` per transformer stack; embeddings, heads and the loss are left out.
    """
    cfg = _config(model_or_config)
    batch, mask_ratio = check_int(batch, "batch"), _mask_ratio(mask_ratio)
    nbytes = BYTES[_choice(precision, BYTES, "precision")]
    state = OPTIMIZER_BYTES[_choice(optimizer, OPTIMIZER_BYTES, "optimizer")]
    n = _parameter_count(model_or_config)
    master = 4 if nbytes < 4 and state else 0
    acts = {k: _activation_bytes(st, batch, nbytes, checkpointing) for k, st in _stacks(cfg, mask_ratio).items()}
    return Memory(n, batch, n * nbytes, n * nbytes, n * (state + master), acts)


# ----------------------------------------------------------------------------- budget

@dataclass
class Budget:
    """Training cost of ``samples_seen`` samples, data-parallel on ``gpu``s at ``mfu``."""
    batch: int
    samples_seen: float
    gpu: GPU
    mfu: float
    days: float | None
    flops_per_step: float
    flops: float              # total training FLOPs
    gpu_hours: float          # flops / (peak · mfu) / 3600
    memory: Memory            # one GPU holding the whole batch (activations scale as 1 / GPUs)
    min_gpus: int             # fewest GPUs whose memory holds the states + their share of the batch
    gpus: int                 # max(min_gpus, GPUs to finish within `days`)

    def days_on(self, gpus: int) -> float:
        """Wall-clock days on ``gpus`` GPUs (perfect scaling at the given MFU)."""
        return self.gpu_hours / check_int(gpus, "gpus") / 24

    def __str__(self) -> str:
        gib = 2**30
        acts = sum(self.memory.activations.values()) / gib
        goal = f" to finish in {self.days:g} days" if self.days else ""
        return "\n".join([
            f"{self.samples_seen:.3g} samples, batch {self.batch}: {self.flops:.3e} FLOPs "
            f"({self.flops_per_step:.3e} per step)",
            f"{self.gpu.name} at MFU {self.mfu:g}: {self.gpu_hours:,.0f} GPU-hours",
            f"memory: states {self.memory.states / gib:.1f} GiB + activations {acts:.1f} GiB for the whole batch "
            f"-> at least {self.min_gpus} GPU{'' if self.min_gpus == 1 else 's'}",
            f"GPUs{goal}: {self.gpus} ({self.days_on(self.gpus):.1f} days)",
        ])

    table = __str__


def budget(model_or_config, batch: int, samples_seen: float, gpu: str = "A100-80GB", mfu: float = 0.4,
           days: float | None = None, precision: str = "bf16", mask_ratio: float = 0.0,
           checkpointing: bool = False) -> Budget:
    """GPU-hours and GPUs to train on ``samples_seen`` samples with global batch ``batch``.

    ``flops = flops_per_step · samples_seen / batch``; ``gpu_hours = flops / (peak · mfu) / 3600``. Data parallel:
    each GPU holds the full weights, gradients and AdamW state plus the activations of ``ceil(batch / GPUs)``
    samples; ``min_gpus`` is the fewest that fit. With ``days``, ``gpus`` also finishes within ``days``.
    ``mfu`` counts model FLOPs only: ``checkpointing`` recomputes the forward pass (about 4/3 of the FLOPs on the
    hardware), so expect a lower MFU with it. Perfect data-parallel scaling is assumed.
    """
    spec = GPUS[_choice(gpu, GPUS, "GPU")]
    if isinstance(mfu, bool) or not isinstance(mfu, numbers.Real) or not 0 < mfu <= 1:
        raise ValueError(f"mfu must lie in (0, 1], got {mfu!r}")
    _positive(samples_seen, "samples_seen")
    if days is not None:
        _positive(days, "days")
    if precision == "bf16" and not spec.bf16:
        raise ValueError(f"the {gpu} has no bf16 tensor cores: use precision='fp16'")
    count = flops(model_or_config, batch, train=True, mask_ratio=mask_ratio)
    mem = memory(model_or_config, batch, precision=precision, checkpointing=checkpointing, mask_ratio=mask_ratio)
    peak = (spec.tflops_fp32 if precision == "fp32" else spec.tflops) * 1e12
    total = count.total * samples_seen / batch
    gpu_hours = total / (peak * mfu) / 3600
    free, per_sample = spec.memory_gib * 2**30 - mem.states, sum(mem.activations.values()) / batch
    if free < per_sample:
        raise ValueError(f"{mem.states / 2**30:.1f} GiB of model states plus one sample's activations do not fit a "
                         f"{gpu} ({spec.memory_gib} GiB): use checkpointing or shard the states (ZeRO/FSDP)")
    min_gpus = math.ceil(batch / math.floor(free / per_sample))
    gpus = max(min_gpus, math.ceil(gpu_hours / (24 * days))) if days else min_gpus
    return Budget(batch, samples_seen, spec, mfu, days, count.total, total, gpu_hours, mem, min_gpus, gpus)


# ----------------------------------------------------------------------------- the survey's claims

def clip_vit_l14() -> CLIPConfig:
    """OpenAI CLIP ViT-L/14 at 224 px: a 24-layer, 1024-wide image tower on 16x16 patches of 14 px (+ CLS = 257
    tokens), a 12-layer, 768-wide text tower on 77 tokens, 768-d embeddings."""
    vision = dict(ViTConfig.PRESETS["clip_b16"], patch_size=14, dim=1024, depth=24, heads=16)
    text = dict(TextConfig.PRESETS["clip"], dim=768, heads=12)
    return CLIPConfig(vision=vision, text=text, embed_dim=768)


def _claim(claim: str, model: str, cfg, data: str, paper: dict | None = None, **kw) -> dict:
    """One row of :func:`survey_claims`: the budget of ``kw`` with its assumptions spelt out."""
    b = budget(cfg, checkpointing=True, **kw)
    row = dict(claim=claim, model=model, **kw, assumptions=(
        f"{data}; global batch {kw['batch']:,d}; {kw['precision']} mixed precision, AdamW, data parallel with "
        f"activation checkpointing; MFU {kw['mfu']:g} of the {kw['gpu']}'s dense {b.gpu.tflops:g} TFLOP/s; "
        f"{kw.get('mask_ratio', 0.0):.0%} of the image patches masked; finished within {kw['days']:g} days"),
        train_flops=b.flops, gpu_hours=b.gpu_hours, min_gpus_memory=b.min_gpus, gpus=b.gpus, days_on_64=b.days_on(64))
    if paper:  # the MFU that the paper's GPU-days imply for our FLOP count
        paper_seconds = paper["gpus"] * paper["days"] * 86400
        row.update(paper=paper["text"], paper_mfu=b.flops / (paper_seconds * b.gpu.tflops * 1e12))
    return row


def survey_claims() -> list[dict]:
    """The survey's two orders of magnitude (§3.2.2), computed; each row states its assumptions.

    (a) CLIP-scale training takes hundreds of GPUs (the survey: "more than 500"). The CLIP paper (Radford et al.
    2021) reports 12 days on 256 V100s for ViT-L/14 and 18 days on 592 V100s for RN50x64, on 400M pairs for
    32 epochs (12.8B samples seen) at batch 32,768, in fp16 with gradient checkpointing. (b) With curated data and
    masking, about 64 GPUs. FLIP (Li et al. 2023) drops 50 % of the patches; that a curated set needs a quarter of
    CLIP's samples seen is our assumption, not a measured figure. Both rows use the same ViT-L/14.
    """
    return [
        _claim("CLIP-scale training needs hundreds of GPUs (survey: more than 500)", "CLIP ViT-L/14, 224 px",
               clip_vit_l14(), "400M web pairs x 32 epochs = 12.8B samples seen",
               dict(gpus=256, days=12, text="256 V100s for 12 days (CLIP paper, ViT-L/14); 592 V100s for 18 days "
                                            "for RN50x64"),
               batch=32768, samples_seen=400e6 * 32, gpu="V100", mfu=0.3, days=12, precision="fp16"),
        _claim("curated data and masking: about 64 GPUs", "CLIP ViT-L/14, 224 px, FLIP 50 % masking",
               clip_vit_l14(), "400M curated pairs x 8 epochs = 3.2B samples seen (assumed enough after curation)",
               batch=32768, samples_seen=400e6 * 8, gpu="A100-80GB", mfu=0.4, days=2, precision="bf16",
               mask_ratio=0.5),
    ]
