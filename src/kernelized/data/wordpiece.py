"""BERT-style WordPiece tokenization for masked-LM pretraining and GLUE fine-tuning (KL paper: "non-contextual
WordPiece embeddings"), trained with the `tokenizers` library on the pretraining corpus.

- :func:`train_wordpiece`: a lower-cased WordPiece vocabulary of ``vocab_size`` entries with BERT's special tokens
  ``[PAD] [UNK] [CLS] [SEP] [MASK]`` (ids 0-4, in that order), saved as ``tokenizer.json`` when a path is given
  (atomically), so a pretraining run keeps its tokenizer and fine-tuning reuses it;
- :class:`WordPiece`: encodes one sentence or a pair as ``[CLS] a [SEP] (b [SEP])`` with segment ids 0 / 1,
  truncating the longer side first to ``max_len`` (BERT's rule), and many of them as padded tensors
  (:meth:`WordPiece.encode_batch`); a saved ``tokenizer.json`` loads with :meth:`WordPiece.load`, a pretrained
  Hugging Face WordPiece tokenizer (``bert-base-uncased``, ...) with :meth:`WordPiece.from_pretrained`.

The special tokens are found by name, so a hub tokenizer's own ids work (bert-base-uncased: [PAD] 0, [UNK] 100,
[CLS] 101, [SEP] 102, [MASK] 103); :attr:`WordPiece.first_ordinary_id` is 0 when the specials are not the first
ids, and masking then skips the specials by id (``special_ids``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

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
    out = WordPiece(tok)
    if path is not None:
        out.save(path)
    return out


class WordPiece:
    """A `tokenizers.Tokenizer` with BERT's five special tokens, sentence / pair encoding and padded batches."""

    def __init__(self, tokenizer, name: str = "wordpiece"):
        ids = {token: tokenizer.token_to_id(token) for token in SPECIAL}
        missing = [t for t, i in ids.items() if i is None]
        if missing:
            raise ValueError(f"tokenizer {name!r} lacks the special tokens {missing} (a BERT WordPiece is needed)")
        self.tokenizer, self.name = tokenizer, name
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (ids[t] for t in SPECIAL)
        self.special_ids = tuple(ids.values())
        self.first_ordinary_id = len(SPECIAL) if self.special_ids == tuple(range(len(SPECIAL))) else 0

    @classmethod
    def from_pretrained(cls, name: str) -> WordPiece:
        """A Hugging Face tokenizer by hub id or local folder (its fast backend), e.g. ``bert-base-uncased``."""
        try:
            from transformers import AutoTokenizer

            backend = AutoTokenizer.from_pretrained(name).backend_tokenizer
        except Exception as e:  # no transformers, no network, unknown id, a slow-only tokenizer: say which
            raise ValueError(f"tokenizer.name {name!r} could not be loaded: {type(e).__name__}: {e}") from None
        return cls(backend, name)

    def save(self, path: str | os.PathLike) -> None:
        write_text_atomic(self.tokenizer.to_str(), Path(path))

    @classmethod
    def load(cls, path: str | os.PathLike) -> WordPiece:
        from tokenizers import Tokenizer

        if not Path(path).is_file():
            raise FileNotFoundError(f"tokenizer file {path} does not exist (train one with train_wordpiece)")
        return cls(Tokenizer.from_file(str(path)), str(path))

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

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
        ids = [self.cls_id, *ta, self.sep_id] + ([*tb, self.sep_id] if tb is not None else [])
        segments = [0] * (len(ta) + 2) + ([1] * (len(tb) + 1) if tb is not None else [])
        return ids, segments

    def encode_batch(self, pairs: Sequence[tuple[str, str | None]], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids [N, L], segments [N, L])`` of :meth:`encode` for each ``(a, b or None)``, right-padded with
        [PAD] (segment 0) to the longest, ``L <= max_len``."""
        encoded = [self.encode(a, b, max_len) for a, b in pairs]
        if not encoded:
            raise ValueError("encode_batch: no examples")
        width = max(len(ids) for ids, _ in encoded)
        ids = torch.full((len(encoded), width), self.pad_id, dtype=torch.long)
        segments = torch.zeros((len(encoded), width), dtype=torch.long)
        for i, (x, s) in enumerate(encoded):
            ids[i, : len(x)], segments[i, : len(s)] = torch.as_tensor(x), torch.as_tensor(s)
        return ids, segments

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids))
