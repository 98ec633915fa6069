"""Train the byte-level BPE tokenizer on the Shapes World corpus: ``python -m vlm_primer.text.build``.

Explained in notebook 01, §Tokenizer. Deterministic: the corpus is generated from a fixed seed and
the BPE trainer breaks ties deterministically, so a rebuild is byte-identical to the committed
``data/tokenizer.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from vlm_primer.text.corpus import corpus_lines
from vlm_primer.text.special import SPECIAL_TOKENS

VOCAB_SIZE = 1024
NUM_SCENES = 2000


def build_tokenizer(num_scenes: int = NUM_SCENES, vocab_size: int = VOCAB_SIZE, seed: int = 0) -> HFTokenizer:
    """Train a byte-level BPE (every string encodes; nothing is ``<unk>``) on the world's corpus."""
    tok = HFTokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus_lines(num_scenes, seed), trainer=trainer)
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i, f"special token {t} should have id {i}"
    return tok


def save(tok: HFTokenizer, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tok.to_str(pretty=True) + "\n", encoding="utf-8")
    return path


def default_path() -> Path:
    return Path(__file__).resolve().parents[2] / "data" / "tokenizer.json"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=default_path(), help="where to write tokenizer.json")
    parser.add_argument("--num-scenes", type=int, default=NUM_SCENES)
    parser.add_argument("--vocab-size", type=int, default=VOCAB_SIZE)
    args = parser.parse_args(argv)
    tok = build_tokenizer(args.num_scenes, args.vocab_size)
    path = save(tok, args.out)
    print(f"wrote {path} ({tok.get_vocab_size()} tokens)")


if __name__ == "__main__":
    main()
