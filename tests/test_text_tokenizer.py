"""The Shapes World tokenizer: special ids, single-token world words, batching, rebuild (chapter 01)."""

import filecmp

import pytest
import torch

from vlm_primer.text import SPECIAL_TOKENS, Tokenizer, tokenizer_path
from vlm_primer.text.build import build_tokenizer, main, save
from vlm_primer.text.corpus import EXTRA_WORDS
from vlm_primer.world import world_words


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.load()


def test_special_ids(tok):
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.mask_id, tok.image_id) == (0, 2, 3, 4, 5)
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i
    assert 512 <= tok.vocab_size <= 1024 and len(tok) == tok.vocab_size


def test_every_world_word_is_one_token(tok):
    for w in world_words() + list(EXTRA_WORDS):
        assert len(tok.encode(w, add_eos=False)) == 1, w
        assert len(tok.encode(f"a {w}", add_eos=False)) == 2, w


def test_roundtrip_and_no_unk(tok):
    for text in ["a small red circle left of a big blue square", "how many stars are there? 12",
                 "Ünïcode ✓ and UPPER case", "tabs\tand\nnewlines"]:
        ids = tok.encode(text, add_bos=True)
        assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id and tok.unk_id not in ids
        assert tok.decode(ids) == text
    ids = tok.encode("<image> what is it?", add_eos=False)
    assert ids[0] == tok.image_id and "<image>" in tok.decode(ids, skip_special=False)
    assert tok.decode(torch.tensor(ids)) == tok.decode(ids)


def test_batch_padding_and_truncation(tok):
    texts = ["a red circle left of a big blue square and a green star", "two stars"]
    out = tok(texts)
    ids, mask = out["input_ids"], out["attention_mask"]
    assert ids.dtype == torch.int64 and mask.dtype == torch.int64 and ids.shape == mask.shape
    assert ids.shape[1] == len(tok.encode(texts[0]))
    assert (ids[mask == 0] == tok.pad_id).all() and mask[1].sum() == len(tok.encode(texts[1]))
    cut = tok(texts, max_length=5, add_bos=True)
    assert cut["input_ids"].shape == (2, 5)
    assert cut["input_ids"][0, -1] == tok.eos_id and cut["input_ids"][0, 0] == tok.bos_id  # EOS kept last
    assert tok.batch_decode(cut["input_ids"])[0] == "a red circle"
    fixed = tok(["a star"], max_length=8, padding="max_length")
    assert fixed["input_ids"].shape == (1, 8) and fixed["attention_mask"].sum() == 3
    ragged = tok(texts, padding=False, return_tensors=None)
    assert [len(r) for r in ragged["input_ids"]] == [len(tok.encode(t)) for t in texts]


def test_bad_input(tok):
    with pytest.raises(ValueError, match="non-empty"):
        tok([])
    with pytest.raises(TypeError):
        tok(["ok", 3])
    with pytest.raises(TypeError):
        tok.encode(None)
    with pytest.raises(ValueError, match="max_length"):
        tok(["a"], max_length=1)
    with pytest.raises(ValueError, match="padding"):
        tok(["a"], padding="max_length")
    with pytest.raises(ValueError, match="ids outside"):
        tok.decode([tok.vocab_size + 5])
    with pytest.raises(FileNotFoundError):
        Tokenizer.load("/nonexistent/tokenizer.json")


def test_to_hf_matches(tok):
    hf = tok.to_hf()
    text = "a big violet rhombus below a white hexagon"
    assert hf(text, add_special_tokens=False)["input_ids"] == tok.encode(text, add_eos=False)
    assert hf.pad_token_id == 0 and hf.eos_token_id == 3 and hf.mask_token_id == 4


def test_rebuild_is_deterministic(tmp_path):
    # The committed file is reproducible: `python -m vlm_primer.text.build` writes it byte for byte.
    out = tmp_path / "tokenizer.json"
    main(["--out", str(out)])
    assert filecmp.cmp(out, tokenizer_path(), shallow=False)


def test_small_builds_agree(tmp_path):
    a = save(build_tokenizer(num_scenes=50, vocab_size=600), tmp_path / "a.json")
    b = save(build_tokenizer(num_scenes=50, vocab_size=600), tmp_path / "b.json")
    assert filecmp.cmp(a, b, shallow=False)
    assert Tokenizer.load(a).vocab_size <= 600
