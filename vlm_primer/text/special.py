"""Special tokens with stable ids: ``<pad>=0, <unk>=1, <bos>=2, <eos>=3, <mask>=4, <image>=5`` and the chat roles."""

SPECIAL_TOKENS: tuple[str, ...] = (
    "<pad>", "<unk>", "<bos>", "<eos>", "<mask>", "<image>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>",
)
