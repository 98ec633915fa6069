"""Parity of our towers and decoder with `transformers` (tiny random configs, eager attention, eval).

Every parameter of the reference is perturbed first (LayerNorm weights start at 1 and biases at 0,
so copying them "by accident" would otherwise go unnoticed), and each test checks that the outputs
differ before the weights are copied.
"""

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import (CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModel,  # noqa: E402
                          LlamaConfig, LlamaForCausalLM, SiglipTextConfig, SiglipTextModel,
                          SiglipVisionConfig, SiglipVisionModel)

from vlm_primer.interop.clip import (clip_text_config_from_text, clip_vision_config_from_vit,  # noqa: E402
                                     text_from_hf_clip_text, text_to_hf_clip_text, vit_from_hf_clip_vision,
                                     vit_to_hf_clip_vision)
from vlm_primer.interop.llama import (decoder_config_from_hf_llama, decoder_from_hf_llama,  # noqa: E402
                                      decoder_to_hf_llama, llama_config_from_decoder)
from vlm_primer.interop.siglip import (siglip_text_config_from_text, siglip_vision_config_from_vit,  # noqa: E402
                                       text_from_hf_siglip_text, text_to_hf_siglip_text,
                                       vit_config_from_hf_siglip_vision, vit_from_hf_siglip_vision,
                                       vit_to_hf_siglip_vision)
from vlm_primer.interop.clip import vit_config_from_hf_clip_vision  # noqa: E402
from vlm_primer.nn import DecoderLM, TextTransformer, ViT  # noqa: E402

TOL = 1e-5
TOWER = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
             attn_implementation="eager")


def perturb(model: torch.nn.Module, scale: float = 0.1) -> torch.nn.Module:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model.eval()


def maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# --------------------------------------------------------------------------- CLIP vision


def test_clip_vision_parity_and_roundtrip():
    hf = perturb(CLIPVisionModel(CLIPVisionConfig(image_size=32, patch_size=8, **TOWER)))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ref = hf(pixel_values=x, output_hidden_states=True)
        fresh = ViT(vit_config_from_hf_clip_vision(hf.config)).eval()(x)
        assert maxdiff(fresh.pooled, ref.pooler_output) > 1e-2  # different weights -> different outputs

        ours = vit_from_hf_clip_vision(hf).eval()
        out = ours(x, output_hidden_states=True)
    assert maxdiff(out.last_hidden_state, ref.last_hidden_state) <= TOL
    assert maxdiff(out.pooled, ref.pooler_output) <= TOL
    assert len(out.hidden_states) == len(ref.hidden_states) == 3
    for a, b in zip(out.hidden_states, ref.hidden_states):
        assert maxdiff(a, b) <= TOL

    # ours -> transformers: a fresh HF model with our weights equals the original
    back = CLIPVisionModel(clip_vision_config_from_vit(ours.cfg, attn_implementation="eager")).eval()
    with torch.no_grad():
        assert maxdiff(back(pixel_values=x).pooler_output, ref.pooler_output) > 1e-2
        back.load_state_dict(vit_to_hf_clip_vision(ours), strict=True)
        again = back(pixel_values=x)
    assert maxdiff(again.last_hidden_state, ref.last_hidden_state) <= TOL
    assert maxdiff(again.pooler_output, ref.pooler_output) <= TOL


def test_clip_vision_from_clipmodel_style_state_dict():
    hf = perturb(CLIPVisionModel(CLIPVisionConfig(image_size=32, patch_size=8, **TOWER)))
    sd = {f"vision_model.{k}": v for k, v in hf.state_dict().items()}
    sd["vision_model.embeddings.position_ids"] = torch.arange(17)[None]  # saved by old checkpoints
    ours = vit_from_hf_clip_vision(sd, hf.config).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert maxdiff(ours(x).pooled, hf(pixel_values=x).pooler_output) <= TOL


# --------------------------------------------------------------------------- CLIP text


def _text_batch(eos: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three rows of different lengths, right-padded; row 0 also has an eos in the middle."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 40, (3, 10), generator=g)
    mask = torch.ones_like(ids)
    for row, length in enumerate([10, 7, 4]):
        ids[row, length - 1] = eos
        ids[row, length:] = pad
        mask[row, length:] = 0
    return ids, mask


@pytest.mark.parametrize("legacy", [True, False], ids=["argmax-eos2", "eos-id"])
def test_clip_text_parity_and_roundtrip(legacy):
    eos, pad = (2, 1) if legacy else (45, 44)
    cfg = CLIPTextConfig(vocab_size=50, max_position_embeddings=12, eos_token_id=eos, pad_token_id=pad,
                         bos_token_id=0, **TOWER)
    hf = perturb(CLIPTextModel(cfg))
    ids, mask = _text_batch(eos=49 if legacy else eos, pad=pad)  # legacy: end-of-text is the largest id
    if not legacy:
        ids[0, 3] = eos  # pooled at the *first* eos
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        ours = text_from_hf_clip_text(hf).eval()
        assert ours.cfg.pool == ("argmax" if legacy else "eos")
        out = ours(ids, mask, output_hidden_states=True)
        fresh = TextTransformer(ours.cfg).eval()(ids, mask)
    assert maxdiff(fresh.pooled, ref.pooler_output) > 1e-2
    real = mask.bool()
    assert maxdiff(out.last_hidden_state, ref.last_hidden_state) <= TOL
    assert maxdiff(out.last_hidden_state[real], ref.last_hidden_state[real]) <= TOL
    assert maxdiff(out.pooled, ref.pooler_output) <= TOL
    for a, b in zip(out.hidden_states, ref.hidden_states, strict=True):
        assert maxdiff(a, b) <= TOL
    # the pooled vector really is taken at the expected position
    pos = [9, 6, 3] if legacy else [3, 6, 3]
    assert maxdiff(out.pooled, out.last_hidden_state[torch.arange(3), torch.tensor(pos)]) == 0

    back = CLIPTextModel(clip_text_config_from_text(ours.cfg, attn_implementation="eager")).eval()
    back.load_state_dict(text_to_hf_clip_text(ours), strict=True)
    with torch.no_grad():
        again = back(input_ids=ids, attention_mask=mask)
    assert maxdiff(again.pooler_output, ref.pooler_output) <= TOL
    assert maxdiff(again.last_hidden_state, ref.last_hidden_state) <= TOL


def test_converters_are_strict():
    hf = CLIPTextModel(CLIPTextConfig(vocab_size=50, max_position_embeddings=12, **TOWER))
    sd = hf.state_dict()
    missing = {k: v for k, v in sd.items() if k != "encoder.layers.1.mlp.fc2.bias"}
    with pytest.raises(ValueError, match="encoder.layers.1.mlp.fc2.bias"):
        text_from_hf_clip_text(missing, hf.config)
    extra = {**sd, "encoder.layers.0.extra.weight": torch.zeros(3)}
    with pytest.raises(ValueError, match="encoder.layers.0.extra.weight"):
        text_from_hf_clip_text(extra, hf.config)
    wrong = {**sd, "final_layer_norm.weight": torch.ones(31)}
    with pytest.raises(ValueError, match=r"norm.weight.*\(32,\).*\(31,\)"):
        text_from_hf_clip_text(wrong, hf.config)
    with pytest.raises(ValueError, match="hf_config"):
        text_from_hf_clip_text(sd)
    siglip_style = ViT(vit_config_from_hf_siglip_vision(SiglipVisionConfig(image_size=32, patch_size=8, **TOWER)))
    with pytest.raises(ValueError, match="cls_token"):
        vit_to_hf_clip_vision(siglip_style)
    from transformers import MistralConfig

    with pytest.raises(ValueError, match="expects a LlamaConfig, got model_type='mistral'"):
        decoder_config_from_hf_llama(MistralConfig())


# --------------------------------------------------------------------------- SigLIP vision


@pytest.mark.parametrize("size, patch", [(32, 8), (30, 8)], ids=["tiled", "remainder"])
def test_siglip_vision_parity_and_roundtrip(size, patch):
    """``remainder``: a patch size that does not divide the image (SigLIP so400m: 384 px, 14 px patches)."""
    hf = perturb(SiglipVisionModel(SiglipVisionConfig(image_size=size, patch_size=patch, **TOWER)))
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        ref = hf(pixel_values=x)
        ours = vit_from_hf_siglip_vision(hf).eval()
        assert not ours.cfg.cls_token and ours.cfg.pool == "map" and ours.cfg.act == "gelu_tanh"
        out = ours(x)
        fresh = ViT(ours.cfg).eval()(x)
    assert maxdiff(fresh.pooled, ref.pooler_output) > 1e-2
    assert maxdiff(out.last_hidden_state, ref.last_hidden_state) <= TOL
    assert maxdiff(out.pooled, ref.pooler_output) <= TOL

    back = SiglipVisionModel(siglip_vision_config_from_vit(ours.cfg, attn_implementation="eager")).eval()
    back.load_state_dict(vit_to_hf_siglip_vision(ours), strict=True)
    with torch.no_grad():
        assert maxdiff(back(pixel_values=x).pooler_output, ref.pooler_output) <= TOL


def test_siglip_text_parity_and_roundtrip():
    cfg = SiglipTextConfig(vocab_size=50, max_position_embeddings=10, projection_size=24, **TOWER)
    hf = perturb(SiglipTextModel(cfg))
    ids, mask = _text_batch(eos=1, pad=1)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask)
        ours, head = text_from_hf_siglip_text(hf)
        ours.eval()
        assert not ours.cfg.causal and ours.cfg.pool == "last" and head.weight.shape == (24, 32)
        out = ours(ids, mask)
        fresh = TextTransformer(ours.cfg).eval()(ids, mask)
        assert maxdiff(head(fresh.pooled), ref.pooler_output) > 1e-2
        assert maxdiff(out.last_hidden_state, ref.last_hidden_state) <= TOL
        assert maxdiff(head(out.pooled), ref.pooler_output) <= TOL

        back = SiglipTextModel(siglip_text_config_from_text(ours.cfg, projection_size=24,
                                                            attn_implementation="eager")).eval()
        back.load_state_dict(text_to_hf_siglip_text(ours, head), strict=True)
        assert maxdiff(back(input_ids=ids, attention_mask=mask).pooler_output, ref.pooler_output) <= TOL


# --------------------------------------------------------------------------- Llama


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
def test_llama_parity_and_roundtrip(tie):
    cfg = LlamaConfig(hidden_size=32, intermediate_size=56, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=64, max_position_embeddings=64, tie_word_embeddings=tie,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0, attn_implementation="eager")
    hf = perturb(LlamaForCausalLM(cfg))
    ids = torch.randint(3, 64, (2, 12))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, labels=labels)
        fresh = DecoderLM(decoder_config_from_hf_llama(cfg)).eval()(ids, attention_mask=mask, labels=labels)
        assert maxdiff(fresh.logits, ref.logits) > 1e-2
        ours = decoder_from_hf_llama(hf).eval()
        out = ours(ids, attention_mask=mask, labels=labels)
    assert ours.cfg.kv_heads == 2 and ours.cfg.norm == "rmsnorm" and ours.cfg.pos_emb == "rope"
    assert (ours.lm_head.weight is ours.tok_emb.weight) == tie
    assert maxdiff(out.logits, ref.logits) <= TOL
    assert abs(out.loss.item() - ref.loss.item()) <= TOL

    back = LlamaForCausalLM(llama_config_from_decoder(ours.cfg, attn_implementation="eager")).eval()
    back.load_state_dict(decoder_to_hf_llama(ours), strict=True)
    with torch.no_grad():
        assert maxdiff(back(input_ids=ids, attention_mask=mask).logits, ref.logits) <= TOL


def test_llama_greedy_generation_matches_transformers():
    cfg = LlamaConfig(hidden_size=32, intermediate_size=56, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=64, max_position_embeddings=64, bos_token_id=1,
                      eos_token_id=2, pad_token_id=0, attn_implementation="eager")
    hf = perturb(LlamaForCausalLM(cfg), scale=0.5)
    ours = decoder_from_hf_llama(hf).eval()
    prompt = torch.randint(3, 64, (2, 5))
    with torch.no_grad():
        ref = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=10, do_sample=False,
                          eos_token_id=None, pad_token_id=0)
    ours_cached = ours.generate(prompt, 10, eos_token_id=None, use_cache=True)
    assert torch.equal(ours_cached, ref)
