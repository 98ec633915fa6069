"""Chat template and assistant-only targets (chapter 01)."""

import pytest

from vlm_primer.backbones.data import prompt_ids
from vlm_primer.text import Tokenizer, encode_chat, format_chat

MESSAGES = [
    {"role": "system", "content": "you are a helpful assistant."},
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what color is the star?"}]},
    {"role": "assistant", "content": "red"},
]


def test_format_chat():
    text = format_chat(MESSAGES)
    assert text == ("<|system|>you are a helpful assistant.<|end|><|user|><image>what color is the star?<|end|>"
                    "<|assistant|>red<|end|>")
    assert format_chat(MESSAGES[:2], add_generation_prompt=True).endswith("<|end|><|assistant|>")
    as_string = [{"role": "user", "content": "<image>what color is the star?"}]
    assert format_chat(as_string) == "<|user|><image>what color is the star?<|end|>"


def test_template_tokenises_cleanly():
    tok = Tokenizer.load()
    ids = tok.encode(format_chat(MESSAGES), add_eos=False)
    assert ids.count(tok.image_id) == 1 and ids.count(tok.end_id) == 3
    for role in ("<|system|>", "<|user|>", "<|assistant|>"):
        assert ids.count(tok.token_to_id(role)) == 1
    assert tok.tokenize("<|user|>what color")[1:] == ["Ġwhat", "Ġcolor"]


def test_hf_chat_template_agrees():
    tok = Tokenizer.load()
    hf = tok.to_hf()
    assert hf.apply_chat_template(MESSAGES, tokenize=False) == "<bos>" + format_chat(MESSAGES)
    assert hf.apply_chat_template(MESSAGES[:2], tokenize=False, add_generation_prompt=True) == "<bos>" + format_chat(
        MESSAGES[:2], add_generation_prompt=True
    )
    # the ids a model was trained on and is prompted with, <bos> first

    def ids(messages, **kw):
        out = hf.apply_chat_template(messages, tokenize=True, **kw)
        return list(out["input_ids"] if "input_ids" in out else out)

    assert ids(MESSAGES) == encode_chat(tok, MESSAGES, add_bos=True)[0]
    assert ids(MESSAGES[:2], add_generation_prompt=True) == prompt_ids(tok, MESSAGES[:2], [1])


def test_encode_chat_targets_only_the_answer():
    tok = Tokenizer.load()
    ids, target = encode_chat(tok, MESSAGES)
    assert ids == tok.encode(format_chat(MESSAGES), add_eos=False)
    answer = [i for i, t in zip(ids, target) if t]
    assert tok.decode(answer, skip_special=False) == "red<|end|>"


@pytest.mark.parametrize(
    "messages, exc",
    [
        ([], ValueError),
        ({"role": "user", "content": "hi"}, ValueError),
        ([{"role": "robot", "content": "hi"}], ValueError),
        ([{"role": "user"}], ValueError),
        (["hi"], TypeError),
        ([{"role": "user", "content": 3}], TypeError),
        ([{"role": "user", "content": [{"type": "video"}]}], ValueError),
    ],
)
def test_bad_messages(messages, exc):
    with pytest.raises(exc):
        format_chat(messages)
