"""Chat template: role tokens, an ``<image>`` placeholder, and assistant-only training targets.

Explained in notebook 01, §Tokenizer (used for instruction tuning in notebooks 05 and 06). A
conversation is a list of ``{"role": "system"|"user"|"assistant", "content": ...}`` where content
is a string (which may contain ``<image>``) or a list of parts ``{"type": "image"}`` /
``{"type": "text", "text": ...}`` (the Hugging Face convention). It is written as

    <|system|>You are a helpful assistant.<|end|><|user|><image>what color is the star?<|end|><|assistant|>red<|end|>

with no newlines, so each segment gets the byte-level prefix space and every world word stays
one token.
"""

from __future__ import annotations

from typing import Any, Sequence

ROLES: tuple[str, ...] = ("system", "user", "assistant")
IMAGE_TOKEN = "<image>"
END_TOKEN = "<|end|>"

# The same format as a Jinja template, for ``PreTrainedTokenizerFast.apply_chat_template``, which tokenizes the
# result without adding special tokens: it starts with ``<bos>`` itself, as every training sequence and prompt does
# (``encode_chat(add_bos=True)``, ``prompt_ids``).
CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for m in messages -%}"
    "<|{{ m['role'] }}|>"
    "{%- if m['content'] is string -%}{{ m['content'] }}"
    "{%- else -%}{%- for p in m['content'] -%}"
    "{%- if p['type'] == 'image' -%}<image>{%- else -%}{{ p['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "<|end|>"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)


def _content(message: Any, i: int) -> tuple[str, str]:
    if not isinstance(message, dict):
        raise TypeError(f"messages[{i}] must be a dict with 'role' and 'content', got {type(message).__name__}")
    if "role" not in message or "content" not in message:
        raise ValueError(f"messages[{i}] needs 'role' and 'content' keys, got {sorted(message)}")
    role, content = message["role"], message["content"]
    if role not in ROLES:
        raise ValueError(f"messages[{i}]['role'] must be one of {ROLES}, got {role!r}")
    if isinstance(content, str):
        return role, content
    if not isinstance(content, (list, tuple)):
        raise TypeError(f"messages[{i}]['content'] must be a str or a list of parts, got {type(content).__name__}")
    text = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") not in ("image", "text"):
            raise ValueError(f"messages[{i}] parts must be {{'type': 'image'}} or {{'type': 'text', 'text': ...}}, got {part!r}")
        text.append(IMAGE_TOKEN if part["type"] == "image" else str(part.get("text", "")))
    return role, "".join(text)


def format_chat(messages: Sequence[dict], add_generation_prompt: bool = False) -> str:
    """The conversation as one string (see the module docstring); ``add_generation_prompt``
    ends it with ``<|assistant|>`` so a model continues with the answer."""
    if isinstance(messages, dict) or not isinstance(messages, Sequence) or len(messages) == 0:
        raise ValueError("messages must be a non-empty list of {'role', 'content'} dicts")
    out = []
    for i, m in enumerate(messages):
        role, text = _content(m, i)
        out.append(f"<|{role}|>{text}{END_TOKEN}")
    if add_generation_prompt:
        out.append("<|assistant|>")
    return "".join(out)


def encode_chat(tokenizer, messages: Sequence[dict], add_bos: bool = False) -> tuple[list[int], list[bool]]:
    """Token ids of the conversation and a parallel mask that is True on the tokens a model is
    trained to produce: each assistant answer and its ``<|end|>`` (not the prompt, not the role tokens)."""
    if not messages:
        raise ValueError("messages must be a non-empty list of {'role', 'content'} dicts")
    ids: list[int] = [tokenizer.bos_id] if add_bos else []
    target: list[bool] = [False] * len(ids)
    for i, m in enumerate(messages):
        role, text = _content(m, i)
        head = tokenizer.encode(f"<|{role}|>", add_eos=False)
        body = tokenizer.encode(f"{text}{END_TOKEN}", add_eos=False)
        ids += head + body
        target += [False] * len(head) + [role == "assistant"] * len(body)
    return ids, target
