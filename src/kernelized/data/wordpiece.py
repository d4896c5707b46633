"""BERT-style WordPiece tokenization for masked-LM pretraining and GLUE fine-tuning (KL paper: "non-contextual
WordPiece embeddings"), trained with the `tokenizers` library on the pretraining corpus.

- :func:`train_wordpiece`: a lower-cased WordPiece vocabulary of ``vocab_size`` entries with BERT's special tokens
  ``[PAD] [UNK] [CLS] [SEP] [MASK]`` (ids 0-4, in that order), saved as ``tokenizer.json`` when a path is given
  (atomically), so a pretraining run keeps its tokenizer and fine-tuning reuses it;
- :class:`WordPiece`: encodes one sentence or a pair as ``[CLS] a [SEP] (b [SEP])`` with segment ids 0 / 1,
  truncating the longer side first to ``max_len`` (BERT's rule); a saved ``tokenizer.json`` loads with
  :meth:`WordPiece.load`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from kernelized._checks import check_positive_int
from kernelized.train.checkpoint import write_text_atomic

SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(len(SPECIAL))


def train_wordpiece(lines: Iterable[str], vocab_size: int, path: str | os.PathLike | None = None) -> WordPiece:
    """A WordPiece tokenizer trained on ``lines`` (lower-cased, BERT's pre-tokenizer), ``vocab_size`` entries."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    check_positive_int("vocab_size", vocab_size, minimum=len(SPECIAL) + 1)
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL), show_progress=False)
    tok.train_from_iterator(lines, trainer=trainer)
    if path is not None:
        write_text_atomic(tok.to_str(), Path(path))
    return WordPiece(tok)


class WordPiece:
    """A trained `tokenizers.Tokenizer` with BERT's special ids and sentence / pair encoding."""

    def __init__(self, tokenizer):
        for i, name in enumerate(SPECIAL):
            if tokenizer.token_to_id(name) != i:
                raise ValueError(f"tokenizer: {name} must have id {i}, got {tokenizer.token_to_id(name)}")
        self.tokenizer = tokenizer

    @classmethod
    def load(cls, path: str | os.PathLike) -> WordPiece:
        from tokenizers import Tokenizer

        if not Path(path).is_file():
            raise FileNotFoundError(f"tokenizer file {path} does not exist (train one with train_wordpiece)")
        return cls(Tokenizer.from_file(str(path)))

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def tokens(self, text: str) -> list[int]:
        """Word-piece ids of ``text``, without special tokens."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode(self, a: str, b: str | None = None, max_len: int = 128) -> tuple[list[int], list[int]]:
        """``([CLS] a [SEP] (b [SEP]), segments)`` of at most ``max_len`` ids; the longer side loses tokens first."""
        check_positive_int("max_len", max_len, minimum=3 if b is None else 5)
        ta, tb = self.tokens(a), self.tokens(b) if b is not None else None
        budget = max_len - (2 if tb is None else 3)
        if tb is None:
            ta = ta[:budget]
        else:
            while len(ta) + len(tb) > budget:
                (ta if len(ta) >= len(tb) else tb).pop()
        ids = [CLS_ID, *ta, SEP_ID] + ([*tb, SEP_ID] if tb is not None else [])
        segments = [0] * (len(ta) + 2) + ([1] * (len(tb) + 1) if tb is not None else [])
        return ids, segments

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids))
