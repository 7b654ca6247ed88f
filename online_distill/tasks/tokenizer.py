"""A character-level tokenizer saved and loaded in Hugging Face format.

The demo task needs a tokenizer that loads through the same ``AutoTokenizer.from_pretrained``
path as any hub model, without ``trust_remote_code``. We build it with the ``tokenizers``
library: a ``WordLevel`` model over single characters (every printable ASCII character plus
newline and tab), a pre-tokenizer that isolates each character, a ``Fuse`` decoder so that
decoding concatenates characters without spaces, and a post-processor that prepends ``<bos>``.

Special tokens, in id order: ``<pad>`` (0), ``<bos>`` (1), ``<eos>`` (2), ``<unk>`` (3).
The demo task ends every line with ``"\\n"``; its models stop generating at a newline
(``generation_config.eos_token_id`` lists both the newline id and ``<eos>``).
"""

from __future__ import annotations

import string
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import AutoTokenizer, PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK)
# Printable ASCII without the vertical tab / form feed that string.printable also holds.
CHARACTERS: tuple[str, ...] = tuple(
    c for c in string.printable if c not in "\x0b\x0c\r"
)


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """Return a fresh character-level tokenizer (vocabulary of 4 specials + 97 characters)."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + CHARACTERS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # "[\s\S]" matches any single character, newline included (a plain "." does not).
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
        model_max_length=128,
    )


def save_char_tokenizer(directory: str | Path) -> PreTrainedTokenizerFast:
    """Build the tokenizer and ``save_pretrained`` it into ``directory``; return it."""
    tok = build_char_tokenizer()
    tok.save_pretrained(str(directory))
    return tok


def load_tokenizer(directory: str | Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer with ``AutoTokenizer`` (the path every hub model takes)."""
    tok = AutoTokenizer.from_pretrained(str(directory))
    if not isinstance(tok, PreTrainedTokenizerFast):  # pragma: no cover - defensive
        raise TypeError(f"expected a fast tokenizer in {directory}, got {type(tok).__name__}")
    return tok
