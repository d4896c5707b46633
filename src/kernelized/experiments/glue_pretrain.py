"""Masked-LM pretraining for ``kernelized glue``: one run per kernel, the encoder every fine-tuning run starts from.

A pretraining run trains (or loads) the WordPiece tokenizer, packs the corpus into ``[CLS] ... [SEP]`` windows of
``pretrain.seq_len`` tokens, masks them BERT's way (15 %: 80 % [MASK], 10 % random, 10 % kept;
``pretrain.mask_copies`` differently masked copies of the training windows, BERT's ``dupe_factor``, so later
epochs see new masks) and trains a bidirectional :class:`LanguageModel` with the framework's trainer. The
output head is applied at the masked positions only (15 % of the tokens: the vocabulary-sized matmul is what
costs most at small widths). Its folder::

    <run>/tokenizer.json           the tokenizer, reused by every fine-tuning run of this pretraining
    <run>/train/                   the Trainer's metrics.jsonl, checkpoint.pt, summary.json
    <run>/result.json              masked accuracy and perplexity on the held-out windows (val, and test for PTB)

Corpora (``pretrain.corpus.source``): ``ptb`` (Mikolov's Penn Treebank splits from the data cache, ``kernelized
data fetch ptb``; ``<unk>`` becomes [UNK]), ``wikitext-103`` (``Salesforce/wikitext``, ``wikitext-103-raw-v1``,
through ``datasets``), or any source of :mod:`kernelized.data.corpora` (a local .txt / .jsonl file or folder,
``hf:<dataset id>``), each record or line one text.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from kernelized.data import corpora, mlm
from kernelized.data.wordpiece import WordPiece, train_wordpiece
from kernelized.experiments.lra import mixer_spec
from kernelized.layers.mixers import attention_spec
from kernelized.models.backbone import LanguageModel, ModelConfig
from kernelized.models.classifier import encoder_config
from kernelized.train import TrainConfig, Trainer
from kernelized.train.checkpoint import load_checkpoint

WIKITEXT = {"source": "hf:Salesforce/wikitext", "config": "wikitext-103-raw-v1"}
ATTENTION = "attention"  # in model.pattern: the run's kernel (or softmax) attention


# -- corpus and tokenizer ------------------------------------------------------------------------------
def corpus_lines(corpus: dict, split: str) -> list[str]:
    """The texts of ``split`` (``train``, ``val`` or ``test``; a local or hub corpus without a test split: [])."""
    source, limit = corpus["source"], corpus.get("max_lines")
    if source == "ptb":
        lines = corpora.ptb_sentences("validation" if split == "val" else split)
        lines = [line.replace("<unk>", "[UNK]") for line in lines]
    else:
        spec = dict(WIKITEXT) if source == "wikitext-103" else {"source": source, "config": corpus.get("config")}
        cfg = corpora.CorpusConfig(**spec, text_field=corpus.get("text_field", "text"))
        if split == "test":
            if not source.startswith("hf:") and source != "wikitext-103":
                return []  # local files have a train / validation split only
            cfg.val_split = "test"
        lines = []
        try:
            for text in corpora.iter_documents(cfg, "train" if split == "train" else "validation"):
                lines.extend(t for t in (text.splitlines() if not source.startswith("hf:") else [text]) if t.strip())
                if limit and len(lines) >= limit:
                    break
        except ValueError:
            if split != "test":
                raise
            return []  # a hub corpus without a test split: scored on validation only
    lines = lines[:limit] if limit else lines
    if not lines and split != "test":
        raise ValueError(
            f"pretrain.corpus: {source} has no {split} text (local files go to validation by a hash of "
            "their name, 5 % of them: add files, or use an hf:<folder> with train and validation files)"
        )
    return lines


def tokenizer_for(config: dict, run_dir: Path, train_lines: list[str]) -> WordPiece:
    """The run's tokenizer: ``tokenizer.json`` in the run folder when present (a resumed run), else a hub
    tokenizer (``tokenizer.name``) or a WordPiece of ``tokenizer.vocab_size`` trained on the corpus; saved."""
    path = Path(run_dir) / "tokenizer.json"
    if path.is_file():
        return WordPiece.load(path)
    spec = config["tokenizer"]
    if spec.get("name"):
        tok = WordPiece.from_pretrained(spec["name"])
    else:
        tok = train_wordpiece(train_lines, spec["vocab_size"])
    tok.save(path)
    return tok


# -- model ---------------------------------------------------------------------------------------------
def mixers(config: dict) -> dict | list[dict]:
    """The mixer of every layer: the kernel's (or softmax) attention, or ``model.pattern`` cycled over the layers
    with each ``"attention"`` entry replaced by it (hybrids such as ``[{mixer: baseconv}, attention]``)."""
    attention = mixer_spec(config["kernel"], config["model"], config.get("kernel_options"))
    pattern = config["model"].get("pattern")
    if not pattern:
        return attention
    return [attention if entry == ATTENTION else dict(entry) for entry in pattern]


def model_config(config: dict, vocab_size: int) -> ModelConfig:
    m = config["model"]
    return encoder_config(
        vocab_size,
        m["d_model"],
        m["num_layers"],
        mixers(config),
        mlp_hidden=m.get("mlp_hidden"),
        max_len=m["max_len"],
        positions=m["positions"],
        dropout=m["dropout"],
        embed_std=m["embed_std"],
        num_segments=m["num_segments"],
    )


def check_config(config: dict) -> None:
    """Values the types do not catch, named by their key."""
    attention_spec(config["kernel"])
    m, p = config["model"], config["pretrain"]
    if p["seq_len"] > m["max_len"]:
        raise ValueError(f"pretrain.seq_len ({p['seq_len']}) must be <= model.max_len ({m['max_len']})")
    for entry in m.get("pattern") or []:
        if entry != ATTENTION and not (isinstance(entry, dict) and "mixer" in entry):
            raise ValueError(f"model.pattern entries must be {ATTENTION!r} or mixer specs, got {entry!r}")
    vocab = config["tokenizer"].get("vocab_size")
    if not config["tokenizer"].get("name") and (isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 6):
        raise ValueError(f"tokenizer.vocab_size must be an integer >= 6 (or set tokenizer.name), got {vocab!r}")


# -- masked-LM loss: the head at the masked positions only -----------------------------------------------
def _masked_logits(model: LanguageModel, batch) -> tuple[torch.Tensor, torch.Tensor]:
    inputs, pad, labels = batch
    hidden = model.backbone(inputs, key_padding_mask=pad if pad.any() else None)  # [B, T, D]
    chosen = labels != mlm.IGNORE
    return model.head(hidden[chosen]).float(), labels[chosen]  # [N, V], [N]


def mlm_loss(model: LanguageModel, batch) -> tuple[torch.Tensor, dict]:
    logits, labels = _masked_logits(model, batch)
    if labels.numel() == 0:
        return logits.sum() * 0.0, {}
    return F.cross_entropy(logits, labels), {}


def mlm_eval(model: LanguageModel, batch) -> dict[str, tuple]:
    logits, labels = _masked_logits(model, batch)
    count = torch.tensor(labels.numel())
    return {
        "loss": (F.cross_entropy(logits, labels, reduction="sum"), count),
        "accuracy": ((logits.argmax(-1) == labels).sum(), count),
    }


def masked_windows(
    tok: WordPiece, lines: list[str], seq_len: int, seed: int, copies: int, prob: float, limit: int | None = None
) -> TensorDataset:
    """``copies`` differently masked copies of the windows of ``lines``: ``(inputs, padding mask, labels)``."""
    pieces = [enc.ids for enc in tok.tokenizer.encode_batch(lines, add_special_tokens=False)]
    windows = mlm.pack_windows(pieces, seq_len, tok.cls_id, tok.sep_id, tok.pad_id)[:limit]
    kw = {
        "mask_id": tok.mask_id,
        "vocab_size": tok.vocab_size,
        "special_ids": tok.special_ids,
        "prob": prob,
        "first_random_id": tok.first_ordinary_id,
    }
    parts = [mlm.masked_dataset(windows, seed * 1000 + copy, **kw).tensors for copy in range(copies)]
    inputs, labels = torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])
    return TensorDataset(inputs, (windows == tok.pad_id).repeat(copies, 1), labels)


# -- one run ---------------------------------------------------------------------------------------------
def run_pretrain(config: dict, run_dir: Path) -> dict:
    """Pretrain one kernel's encoder (resumable); returns masked accuracy and perplexity on held-out windows."""
    if config.get("threads"):
        torch.set_num_threads(int(config["threads"]))
    p, run_dir = config["pretrain"], Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    train_lines = corpus_lines(p["corpus"], "train")
    tok = tokenizer_for(config, run_dir, train_lines)
    train = masked_windows(tok, train_lines, p["seq_len"], p["seed"], p["mask_copies"], p["mask_prob"])
    held_out = {}
    for i, split in enumerate(("val", "test"), 1):
        lines = corpus_lines(p["corpus"], split)
        if lines:
            held_out[split] = masked_windows(
                tok, lines, p["seq_len"], p["seed"] + i, 1, p["mask_prob"], p["eval_windows"]
            )
    torch.manual_seed(p["seed"])
    model = LanguageModel(model_config(config, tok.vocab_size))
    train_cfg = TrainConfig.from_dict({**p["train"], "seed": p["seed"]})
    trainer = Trainer(
        model, train_cfg, train, held_out["val"], run_dir=run_dir / "train", loss_fn=mlm_loss, eval_fn=mlm_eval
    )
    summary = trainer.fit()
    trainer.load_weights()
    scores = {split: trainer.evaluate(ds) for split, ds in held_out.items()}
    for s in scores.values():
        s["perplexity"] = math.exp(min(s["loss"], 50.0))
    return {
        **summary,
        "kernel": config["kernel"],
        "held_out": scores,
        "vocab_size": tok.vocab_size,
        "train_windows": len(train) // p["mask_copies"],
    }


def load_pretrained(run_dir: str | Path) -> tuple[dict, WordPiece, ModelConfig, dict]:
    """A finished pretraining run's ``(config, tokenizer, encoder ModelConfig, encoder state dict)``; a missing
    run or checkpoint is one error naming the folder."""
    from kernelized.experiments.framework.presets import read_yaml

    run_dir = Path(run_dir)
    checkpoint = run_dir / "train" / "checkpoint.pt"
    if not (run_dir / "result.json").is_file() or not checkpoint.is_file():
        raise FileNotFoundError(
            f"pretraining run {run_dir} does not exist or has not finished (no result.json and "
            f"train/checkpoint.pt there): run `kernelized glue --stage pretrain` first"
        )
    config = read_yaml(run_dir / "config.yaml")
    tok = WordPiece.load(run_dir / "tokenizer.json")
    state = load_checkpoint(checkpoint)["model"]
    encoder = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    return config, tok, model_config(config, tok.vocab_size), encoder
