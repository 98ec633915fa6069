"""Text side of the book: the Shapes World tokenizer and the chat template (chapter 01).

``Tokenizer.load()`` reads ``data/tokenizer.json`` (rebuild: ``python -m vlm_primer.text.build``).
"""

from vlm_primer.text.special import SPECIAL_TOKENS
from vlm_primer.text.chat import CHAT_TEMPLATE, encode_chat, format_chat
from vlm_primer.text.tokenizer import Tokenizer, tokenizer_path

__all__ = ["CHAT_TEMPLATE", "SPECIAL_TOKENS", "Tokenizer", "encode_chat", "format_chat", "tokenizer_path"]
