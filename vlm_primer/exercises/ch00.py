"""Checks for the exercises of chapter 00 (the preface). Explained in notebook 00, §Exercises."""

from __future__ import annotations

from vlm_primer.exercises import Wrong, exercise, whole

FAMILIES = {
    "CLIP": "contrastive", "SigLIP": "contrastive", "Llip": "contrastive",
    "FLAVA": "masking", "MaskVLM": "masking", "VisualBERT": "masking",
    "CoCa": "generative", "Parti": "generative", "Stable Diffusion": "generative",
    "LLaVA": "pretrained backbones", "BLIP-2": "pretrained backbones", "Flamingo": "pretrained backbones",
    "MiniGPT-4": "pretrained backbones", "Frozen": "pretrained backbones",
}


@exercise("00.1", "Sort models into the four families")
def families(answer) -> str:
    if not isinstance(answer, dict):
        raise Wrong(f"answer with a dict {{model: family}}, got {type(answer).__name__}")
    if not answer:
        raise NotImplementedError
    missing = sorted(set(FAMILIES) - set(answer))
    if missing:
        raise Wrong(f"{len(missing)} model(s) not placed yet, e.g. {missing[0]}")
    wrong = sorted(m for m, f in FAMILIES.items() if str(answer[m]).strip().lower() != f)
    if wrong:
        raise Wrong(f"{len(wrong)} of {len(FAMILIES)} misplaced, e.g. {wrong[0]}: reread the table of the four families")
    return "CoCa also trains a contrastive loss, and BLIP mixes contrastive, matching and captioning losses"


@exercise("00.2", "How many tokens does a ViT see?")
def num_patches(fn) -> None:
    for size, patch, want in ((224, 16, 196), (224, 14, 256), (336, 14, 576), (48, 6, 64), (32, 4, 64)):
        got = fn(size, patch)
        if got == size // patch:
            raise Wrong("that is the patches along one side: the image is a square grid of patches")
        if got == want + 1:
            raise Wrong("count the patches only, not the class token")
        if got != want:
            raise Wrong(f"a {size}x{size} image in {patch}x{patch} patches: the count is off")


@exercise("00.3", "Count the parameters of a ViT")
def vit_params(fn) -> str:
    from vlm_primer.nn import ViT, ViTConfig

    for name, extra in (("tiny", {}), ("small", {}), ("base", {}), ("tiny", dict(pre_norm=True)),
                        ("tiny", dict(pre_norm=True, final_norm=False))):
        cfg = ViTConfig.from_preset(name, **extra)
        name = f"{name}{', ' + ', '.join(f'{k}={v}' for k, v in extra.items()) if extra else ''}"
        want = sum(p.numel() for p in ViT(cfg).parameters())
        got = whole(fn(cfg), "the parameter count")
        if got != want:
            hint = ("too few: did you count the biases, both LayerNorms of every block and the final LayerNorm?"
                    if got < want else "too many")
            raise Wrong(f"preset {name!r}: {hint} (off by {abs(got - want):,})")
    return "your formula matches ViT(cfg) for tiny, small and base, with and without pre_norm"


@exercise("00.4", "The memory bill of training in fp32 with AdamW")
def adamw_memory(fn) -> str:
    hints = {4: "only the weights", 8: "weights and gradients, but AdamW keeps two moments per parameter too",
             12: "weights and the two AdamW moments: add the gradients"}
    for n in (1_000, 86_000_000):
        got = whole(fn(n), "the byte count")
        for per, hint in hints.items():
            if got == per * n:
                raise Wrong(f"{per} bytes per parameter counts {hint}")
        if got != 16 * n:
            raise Wrong(f"for {n:,} parameters the byte count is off (activations are not part of this question)")
    return f"ViT-B/16 (86 M parameters) needs {fn(86_000_000) / 2**30:.1f} GiB before any activation"
