"""The project's tokenizer: a small byte-level BPE trained on the Shapes World language.

Explained in notebook 01, §Tokenizer. A thin wrapper around Hugging Face ``tokenizers`` that loads
``data/tokenizer.json`` offline and pads/truncates batches the way our models expect: EOS stays
the last real token even after truncation (CLIP pools the text at EOS), padding uses ``<pad>=0``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
from tokenizers import Tokenizer as HFTokenizer

from vlm_primer.text.special import SPECIAL_TOKENS
from vlm_primer.validate import check_int

TOKENIZER_ENV = "VLM_PRIMER_TOKENIZER"


def tokenizer_path() -> Path:
    """Locate ``tokenizer.json``: ``$VLM_PRIMER_TOKENIZER``, the repository's ``data/``, or ``./data/``."""
    candidates = []
    if os.environ.get(TOKENIZER_ENV):
        candidates.append(Path(os.environ[TOKENIZER_ENV]))
    candidates.append(Path(__file__).resolve().parents[2] / "data" / "tokenizer.json")
    candidates.append(Path.cwd() / "data" / "tokenizer.json")
    candidates.append(Path.cwd().parent / "data" / "tokenizer.json")  # notebooks/ as working directory
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        "tokenizer.json not found (looked in " + ", ".join(str(p) for p in candidates)
        + "); rebuild it with `python -m vlm_primer.text.build`"
    )


class Tokenizer:
    """Encode/decode text and batch it into padded ``input_ids``/``attention_mask`` tensors."""

    def __init__(self, tokenizer: HFTokenizer) -> None:
        if not isinstance(tokenizer, HFTokenizer):
            raise TypeError(f"expected a tokenizers.Tokenizer, got {type(tokenizer).__name__}")
        self.tokenizer = tokenizer
        for i, t in enumerate(SPECIAL_TOKENS):
            if tokenizer.token_to_id(t) != i:
                raise ValueError(f"special token {t!r} must have id {i}, got {tokenizer.token_to_id(t)}")

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Tokenizer":
        """Load ``path`` (default: :func:`tokenizer_path`). Works offline."""
        path = tokenizer_path() if path is None else Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer file at {path}")
        # Read through Python's open (not Rust's): the book's executor then sees the file as an input.
        return cls(HFTokenizer.from_str(path.read_text(encoding="utf-8")))

    # ------------------------------------------------------------------ ids
    pad_token, unk_token, bos_token, eos_token, mask_token, image_token = SPECIAL_TOKENS[:6]
    system_token, user_token, assistant_token, end_token = SPECIAL_TOKENS[6:]

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return 1

    @property
    def bos_id(self) -> int:
        return 2

    @property
    def eos_id(self) -> int:
        return 3

    @property
    def mask_id(self) -> int:
        return 4

    @property
    def image_id(self) -> int:
        return 5

    @property
    def end_id(self) -> int:
        return 9

    @property
    def special_ids(self) -> tuple[int, ...]:
        return tuple(range(len(SPECIAL_TOKENS)))

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def __len__(self) -> int:
        return self.vocab_size

    def token_to_id(self, token: str) -> int | None:
        return self.tokenizer.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        return self.tokenizer.id_to_token(i)

    # ------------------------------------------------------------------ encode / decode
    def encode(self, text: str, add_bos: bool = False, add_eos: bool = True) -> list[int]:
        """Token ids of ``text`` (special tokens written in the text, like ``<image>``, are kept)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        return ([self.bos_id] if add_bos else []) + ids + ([self.eos_id] if add_eos else [])

    def tokenize(self, text: str) -> list[str]:
        return self.tokenizer.encode(text, add_special_tokens=False).tokens

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special: bool = True) -> str:
        """Text of ``ids``; with ``skip_special`` drops ``<pad>``/``<eos>``/... (and the leading space
        the byte-level pre-tokenizer adds)."""
        if isinstance(ids, torch.Tensor):
            if ids.ndim != 1:
                raise ValueError(f"decode expects a 1-D sequence of ids, got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"ids outside [0, {self.vocab_size}): {bad[:5]}")
        text = self.tokenizer.decode(ids, skip_special_tokens=skip_special)
        return text[1:] if text.startswith(" ") else text

    def batch_decode(self, ids: torch.Tensor | Sequence[Sequence[int]], skip_special: bool = True) -> list[str]:
        if isinstance(ids, torch.Tensor) and ids.ndim != 2:
            raise ValueError(f"batch_decode expects (B, L) ids, got shape {tuple(ids.shape)}")
        return [self.decode(row, skip_special) for row in ids]

    def __call__(
        self,
        texts: Sequence[str] | str,
        max_length: int | None = None,
        padding: bool | str = True,
        add_bos: bool = False,
        add_eos: bool = True,
        return_tensors: str | None = "pt",
    ) -> dict:
        """Batch-encode: ``{"input_ids": (B, L) int64, "attention_mask": (B, L) int64}``.

        ``padding``: True/"longest" pads to the longest sequence, "max_length" to ``max_length``,
        False returns lists of unequal length (``return_tensors=None`` only). Sequences longer than
        ``max_length`` are cut, keeping EOS as the last token when ``add_eos``.
        """
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, Sequence) or len(texts) == 0:
            raise ValueError("texts must be a non-empty list of strings")
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must all be str")
        if max_length is not None:
            check_int(max_length, "max_length", 1 + add_bos + add_eos, hint="room for a token and the specials")
        if padding not in (True, False, "longest", "max_length"):
            raise ValueError(f"padding must be True, False, 'longest' or 'max_length', got {padding!r}")
        if padding == "max_length" and max_length is None:
            raise ValueError("padding='max_length' needs max_length")
        if return_tensors not in ("pt", None):
            raise ValueError(f"return_tensors must be 'pt' or None, got {return_tensors!r}")
        encs = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        rows = []
        for enc in encs:
            ids = enc.ids
            if max_length is not None:
                ids = ids[: max_length - add_bos - add_eos]
            rows.append(([self.bos_id] if add_bos else []) + ids + ([self.eos_id] if add_eos else []))
        if padding is False:
            if return_tensors is not None:
                raise ValueError("padding=False gives ragged rows; use return_tensors=None")
            return {"input_ids": rows, "attention_mask": [[1] * len(r) for r in rows]}
        length = max_length if padding == "max_length" else max(len(r) for r in rows)
        input_ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            attention_mask[i, : len(r)] = 1
        if return_tensors is None:
            return {"input_ids": input_ids.tolist(), "attention_mask": attention_mask.tolist()}
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    # ------------------------------------------------------------------ interop
    def to_hf(self, add_eos: bool = False):
        """The same tokenizer as a ``transformers.PreTrainedTokenizerFast`` (with our chat template).

        ``add_eos=True`` appends ``<eos>`` to every text, as :meth:`__call__` does by default: what a text tower
        pooled at its ``<eos>`` (CLIP) or last token (SigLIP) must be given; a language model's tokenizer leaves
        it off (the chat template ends each turn itself)."""
        from tokenizers import Tokenizer as RawTokenizer
        from tokenizers.processors import TemplateProcessing
        from transformers import PreTrainedTokenizerFast

        from vlm_primer.text.chat import CHAT_TEMPLATE

        raw = RawTokenizer.from_str(self.tokenizer.to_str())  # a copy: ours encodes without post-processing
        if add_eos:
            eos = (self.eos_token, self.eos_id)
            raw.post_processor = TemplateProcessing(single=f"$A {eos[0]}", pair=f"$A {eos[0]} $B {eos[0]}",
                                                    special_tokens=[eos])
        hf = PreTrainedTokenizerFast(
            tokenizer_object=raw,
            pad_token=self.pad_token,
            unk_token=self.unk_token,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
            mask_token=self.mask_token,
            additional_special_tokens=[self.image_token, self.system_token, self.user_token,
                                       self.assistant_token, self.end_token],
        )
        hf.chat_template = CHAT_TEMPLATE
        return hf

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, pad={self.pad_id}, bos={self.bos_id}, eos={self.eos_id})"
