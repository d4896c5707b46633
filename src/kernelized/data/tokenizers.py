"""Tokenizers for language modelling: a built-in byte-level one, and any `tokenizers`/`transformers` one.

Every tokenizer here has the same small interface::

    tok.encode(text) -> list[int]      tok.decode(ids) -> str
    tok.vocab_size: int                tok.eos_id: int | None     tok.name: str

``load_tokenizer("byte")`` needs nothing beyond the standard library; ``"ptb-words"`` is the Penn Treebank's word
vocabulary (from the data cache, ``kernelized data fetch ptb``); a name or path is tried as a
`tokenizers` JSON file, then as a `transformers` tokenizer (local folder or hub id).
"""

from __future__ import annotations

import os
from collections.abc import Sequence


class ByteTokenizer:
    """UTF-8 bytes as tokens 0..255, plus one end-of-document token (256).

    Decoding drops the end-of-document token and replaces invalid UTF-8 (e.g. a sampled byte sequence cut
    mid-character) with U+FFFD, so any id sequence decodes.
    """

    name = "byte"

    def __init__(self):
        self.vocab_size = 257
        self.eos_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return "ByteTokenizer(vocab_size=257, eos_id=256)"


class HFTokenizer:
    """A `tokenizers.Tokenizer` (fast, from a tokenizer.json) or a `transformers` tokenizer behind one interface.

    ``vocab_size`` counts added special tokens too, so every id the tokenizer can emit indexes the embedding.
    """

    def __init__(self, backend, name: str):
        self.backend = backend
        self.name = name
        self._is_transformers = hasattr(backend, "convert_ids_to_tokens")
        if self._is_transformers:
            self.vocab_size = len(backend)
            eos = backend.eos_token_id
        else:
            self.vocab_size = backend.get_vocab_size(with_added_tokens=True)
            eos = None
            for token in ("</s>", "<|endoftext|>", "<eos>", "[SEP]"):
                eos = backend.token_to_id(token)
                if eos is not None:
                    break
        self.eos_id = None if eos is None else int(eos)

    def encode(self, text: str) -> list[int]:
        if self._is_transformers:
            return list(self.backend.encode(text, add_special_tokens=False))
        return list(self.backend.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        ids = [int(i) for i in ids]
        return self.backend.decode(ids, skip_special_tokens=True)

    def __repr__(self) -> str:
        return f"HFTokenizer({self.name!r}, vocab_size={self.vocab_size}, eos_id={self.eos_id})"


Tokenizer = ByteTokenizer | HFTokenizer


def load_tokenizer(name_or_path: str = "byte") -> Tokenizer:
    """``"byte"`` -> :class:`ByteTokenizer`; a ``tokenizer.json`` file (or a folder holding only one) ->
    `tokenizers`; otherwise a `transformers` tokenizer by local folder or hub id (e.g. ``"EleutherAI/pythia-160m"``).

    Raises ValueError naming what was tried when nothing loads (missing file, unknown hub id, no network,
    `transformers` not installed).
    """
    if not isinstance(name_or_path, str) or not name_or_path:
        raise ValueError(f"tokenizer must be 'byte' or a tokenizer name/path, got {name_or_path!r}")
    if name_or_path == "byte":
        return ByteTokenizer()
    if name_or_path == "ptb-words":  # Penn Treebank word level, from the data cache's training split
        from kernelized.data import penn_treebank
        from kernelized.data.corpora import ptb_sentences

        return HFTokenizer(penn_treebank.word_tokenizer(ptb_sentences("train")), "ptb-words")
    path = os.path.expanduser(name_or_path)
    json_file = path
    if os.path.isdir(path):  # a folder saved by transformers (has tokenizer_config.json) goes to transformers
        has_config = os.path.isfile(os.path.join(path, "tokenizer_config.json"))
        json_file = "" if has_config else os.path.join(path, "tokenizer.json")
    if os.path.isfile(json_file) and json_file.endswith(".json"):
        try:
            from tokenizers import Tokenizer as FastTokenizer
        except ImportError as e:
            raise ValueError(f"tokenizer {name_or_path!r} is a tokenizer.json but `tokenizers` is not installed") from e
        return HFTokenizer(FastTokenizer.from_file(json_file), name_or_path)
    looks_like_path = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if looks_like_path and not os.path.exists(path):
        raise ValueError(
            f"tokenizer {name_or_path!r} could not be found: no such file or folder (expected 'byte', "
            "a tokenizer.json file, a folder saved by transformers, or a hub id)"
        )
    try:
        from transformers import AutoTokenizer
    except ImportError as e:
        raise ValueError(
            f"tokenizer {name_or_path!r} is not 'byte' nor a tokenizer.json file, and `transformers` "
            "(needed for hub ids and tokenizer folders) is not installed"
        ) from e
    try:
        backend = AutoTokenizer.from_pretrained(path)
    except Exception as e:  # transformers raises OSError/ValueError/HTTP errors depending on the cause
        raise ValueError(
            f"tokenizer {name_or_path!r} could not be found: not 'byte', not a tokenizer.json file, and "
            f"transformers.AutoTokenizer failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from e
    return HFTokenizer(backend, name_or_path)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map of the 256 bytes to printable characters (what `tokenizers`' ByteLevel pre-tokenizer emits)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    out, extra = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in out:
            out[b], extra = chr(256 + extra), extra + 1
    return out


BYTE_EOS = "<|endoftext|>"


def to_transformers(tok: Tokenizer):
    """The tokenizer as a `transformers` tokenizer (``save_pretrained`` writes the files ``AutoTokenizer`` and
    pipelines read), with the same ids: the byte tokenizer becomes a byte-level BPE without merges whose ids are
    the byte values, and 256 its end-of-document token ``<|endoftext|>``."""
    from transformers import PreTrainedTokenizerFast

    if isinstance(tok, HFTokenizer):
        if tok._is_transformers:
            return tok.backend
        eos = tok.backend.id_to_token(tok.eos_id) if tok.eos_id is not None else None
        return PreTrainedTokenizerFast(tokenizer_object=tok.backend, eos_token=eos)
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    vocab = {char: byte for byte, char in _bytes_to_unicode().items()}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(BYTE_EOS, special=True)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=BYTE_EOS)
