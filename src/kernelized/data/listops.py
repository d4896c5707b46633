"""ListOps (Nangia & Bowman 2018) with the Long Range Arena rules, generated fast, read and written as LRA's TSV.

Rules (LRA ``lra_benchmarks/data/listops.py``): operators MIN, MAX, MED (``int(median)``, so a .5 median truncates)
and SM (sum mod 10) over digits 0-9; an operator node has 2..``max_args`` children; a node at depth < ``max_depth``
is an operator with probability 0.25, else a digit; at ``max_depth`` it is a digit. The length counts 1 per digit
and 2 per operator (``[OP`` and ``]``); a tree is kept only if ``min_length < length < max_length`` and it is new.

LRA draws one tree at a time in Python (hours for 100k). Here a whole batch of trees is drawn level by level with
numpy, the lengths and values are computed bottom-up, and the accepted trees are serialised straight into a byte
buffer, so 100k examples take seconds. Rejected roots that are digits (length 1) are never drawn: that changes
nothing about the accepted trees' distribution. The random stream differs from LRA's (it could not match anyway).

TSV format (``basic_{train,val,test}.tsv``): a header ``Source\\tTarget``, then one line per example. With
``parens=True`` (LRA's files) the source is ``to_string`` of LRA's nested pairs, e.g. ``( ( ( [MAX 2 ) 9 ) ] )``;
``parens=False`` writes the bare form ``[MAX 2 9 ]``. Reading accepts both: like LRA's input pipeline the parens are
dropped and ``]`` becomes ``X``.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kernelized._checks import check_positive_int

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
VALUE_P = 0.25  # probability that a node above max_depth is an operator (LRA's VALUE_P)
SPLITS = ("train", "val", "test")

# Token ids: 0 pad, 1 cls (prepended by CLS-pooled models), then digits, operators and the close bracket 'X'.
PAD_ID, CLS_ID = 0, 1
VOCAB = ("<pad>", "<cls>", *[str(d) for d in range(10)], *OPERATORS, "X")
TOKEN_TO_ID = {tok: i for i, tok in enumerate(VOCAB)}
TOKEN_TO_ID["]"] = TOKEN_TO_ID["X"]  # raw files carry ']' (LRA renames it to 'X' when tokenising)
VOCAB_SIZE = len(VOCAB)

# Byte spellings used by the serialiser; index = internal symbol id (0-9 digits, 10-13 operators, 14 ']', 15 '(',
# 16 ')'), each followed by one space.
_SYMBOLS = [str(d) for d in range(10)] + list(OPERATORS) + ["]", "(", ")"]
_OPEN, _CLOSE, _LPAREN, _RPAREN = 10, 14, 15, 16


@dataclass
class ListOpsConfig:
    """Generator settings; the defaults are LRA's."""

    max_depth: int = 10
    max_args: int = 10
    min_length: int = 500  # exclusive
    max_length: int = 2000  # exclusive

    def validate(self) -> None:
        check_positive_int("max_depth", self.max_depth, minimum=2)
        check_positive_int("max_args", self.max_args, minimum=2)
        check_positive_int("min_length", self.min_length, minimum=0)
        check_positive_int("max_length", self.max_length)
        if self.max_length <= self.min_length + 1:
            raise ValueError(
                f"max_length must exceed min_length + 1 (lengths are exclusive), got "
                f"min_length={self.min_length}, max_length={self.max_length}"
            )


def _draw_batch(rng: np.random.Generator, num_trees: int, cfg: ListOpsConfig, parens: bool):
    """Draw ``num_trees`` trees with an operator at the root; return (lines, lengths) of the accepted ones.

    Each level holds its nodes in parent order, so the children of one operator are contiguous. Bottom-up we
    get subtree lengths, serialised sizes and values; top-down the start offset of every node in the output buffer.
    """
    # ---- top-down: structure, level by level
    levels = []  # per level: dict(tree, parent, is_op, nchild, sym)
    tree = np.arange(num_trees)
    is_op = np.ones(num_trees, dtype=bool)
    parent = np.full(num_trees, -1)
    for depth in range(1, cfg.max_depth + 1):
        n = len(tree)
        sym = np.where(is_op, _OPEN + rng.integers(0, 4, n), rng.integers(0, 10, n))
        nchild = np.where(is_op, rng.integers(2, cfg.max_args + 1, n), 0)
        levels.append(dict(tree=tree, parent=parent, is_op=is_op, nchild=nchild, sym=sym))
        total = int(nchild.sum())
        if total == 0:
            break
        parent = np.repeat(np.arange(n), nchild)
        tree = tree[parent]
        child_depth = depth + 1
        if child_depth < cfg.max_depth:
            is_op = rng.random(total) <= VALUE_P  # LRA: r > VALUE_P -> digit
        else:
            is_op = np.zeros(total, dtype=bool)

    # ---- bottom-up: LRA length, serialised size (tokens incl. parens) and value of every node
    for lv in reversed(range(len(levels))):
        L = levels[lv]
        length = np.ones(len(L["tree"]), dtype=np.int64)
        value = np.where(L["is_op"], 0, L["sym"]).astype(np.int64)
        if lv + 1 < len(levels):
            C = levels[lv + 1]
            ops = np.flatnonzero(L["is_op"])
            starts = np.concatenate([[0], np.cumsum(L["nchild"][ops])[:-1]])
            length[ops] = 2 + np.add.reduceat(C["length"], starts)
            size_children = np.add.reduceat(C["size"], starts)
            cv = C["value"]
            op = L["sym"][ops] - _OPEN
            vmin = np.minimum.reduceat(cv, starts)
            vmax = np.maximum.reduceat(cv, starts)
            vsum = np.add.reduceat(cv, starts) % 10
            # median per group: sort values inside each group (stable on parent index), take the middle pair
            order = np.lexsort((cv, C["parent"]))
            sv = cv[order]
            nch = L["nchild"][ops]
            vmed = (sv[starts + (nch - 1) // 2] + sv[starts + nch // 2]) // 2
            value[ops] = np.choose(op, [vmin, vmax, vmed, vsum])
            size = np.ones(len(L["tree"]), dtype=np.int64)
            # bare: [OP children ]   parens: (x(n+1) [OP c1 ) c2 ) ... cn ) ] )
            size[ops] = size_children + (2 + 2 * nch + 2 if parens else 2)
        else:
            size = np.ones(len(L["tree"]), dtype=np.int64)
        L["length"], L["size"], L["value"] = length, size, value

    root = levels[0]
    accept = (root["length"] > cfg.min_length) & (root["length"] < cfg.max_length)
    if not accept.any():
        return [], np.zeros(0, dtype=np.int64)
    # output symbols per accepted tree; the buffer holds one symbol id per token
    tree_start = np.zeros(num_trees, dtype=np.int64)
    tree_start[accept] = np.concatenate([[0], np.cumsum(root["size"][accept])[:-1]])
    total_tokens = int(root["size"][accept].sum())
    out = np.full(total_tokens, -1, dtype=np.int64)

    root["start"] = tree_start
    for lv in range(len(levels)):
        L = levels[lv]
        keep = accept[L["tree"]]
        start = L["start"]
        ops = np.flatnonzero(L["is_op"])
        nch = L["nchild"][ops]
        # the operator symbol, its closing ']' (and the parens)
        op_pos = start[ops] + (nch + 1 if parens else 0)
        k_ops = keep[ops]
        out[op_pos[k_ops]] = L["sym"][ops][k_ops]
        end = start[ops] + L["size"][ops]
        if parens:
            out[end[k_ops] - 1] = _RPAREN
            out[end[k_ops] - 2] = _CLOSE
            first = start[ops][k_ops]
            reps = (nch + 1)[k_ops]
            lp = np.repeat(first - np.cumsum(np.concatenate([[0], reps[:-1]])), reps) + np.arange(reps.sum())
            out[lp] = _LPAREN
        else:
            out[end[k_ops] - 1] = _CLOSE
        leaves = np.flatnonzero(~L["is_op"] & keep)
        out[start[leaves]] = L["sym"][leaves]
        if lv + 1 < len(levels):
            C = levels[lv + 1]
            # child start = first child slot of the parent + sizes (and ')' separators) of the earlier siblings
            step = C["size"] + (1 if parens else 0)
            csum = np.cumsum(step) - step  # exclusive cumsum over the whole level
            group_first = np.repeat(csum[np.concatenate([[0], np.cumsum(nch)[:-1]])], nch)
            first_slot = start[ops] + (nch + 2 if parens else 1)
            C["start"] = np.repeat(first_slot, nch) + csum - group_first
            if parens:
                sep = C["start"] + C["size"]
                ck = accept[C["tree"]]
                out[sep[ck]] = _RPAREN
    assert (out >= 0).all(), "serialiser left a hole"  # internal invariant

    lines = _to_lines(out, root["size"][accept], root["value"][accept])
    return lines, root["length"][accept]


def _to_lines(symbols: np.ndarray, sizes: np.ndarray, values: np.ndarray) -> list[bytes]:
    """Symbol ids -> b'SOURCE\\tTARGET' per tree, built with numpy (no Python loop over tokens)."""
    spell = [s.encode() + b" " for s in _SYMBOLS]
    widths = np.array([len(s) for s in spell])
    table = np.zeros((len(spell), widths.max()), dtype=np.uint8)
    for i, s in enumerate(spell):
        table[i, : len(s)] = np.frombuffer(s, dtype=np.uint8)
    w = widths[symbols]
    offset = np.cumsum(w) - w
    buf = np.zeros(int(w.sum()), dtype=np.uint8)
    for j in range(widths.max()):
        has = w > j
        buf[offset[has] + j] = table[symbols[has], j]
    # the trailing space of each tree's last token becomes '\t'; the target digit and '\n' follow
    last = np.cumsum(sizes) - 1
    buf[offset[last] + w[last] - 1] = ord("\t")
    raw = buf.tobytes()
    ends = (offset[last] + w[last]).tolist()
    starts = [0, *ends[:-1]]
    return [raw[s:e] + str(int(v)).encode() for s, e, v in zip(starts, ends, values)]


def generate_lines(
    num_examples: int,
    *,
    seed: int = 0,
    config: ListOpsConfig | None = None,
    parens: bool = True,
    batch_size: int = 4096,
    progress: bool = False,
) -> list[bytes]:
    """``num_examples`` unique examples as TSV lines ``b'SOURCE\\tTARGET'`` (no newline), deterministic by seed."""
    check_positive_int("num_examples", num_examples)
    check_positive_int("batch_size", batch_size)
    cfg = config or ListOpsConfig()
    cfg.validate()
    rng = np.random.default_rng(seed)
    seen: set[bytes] = set()  # digests of the sources: unique trees without keeping every string twice
    lines: list[bytes] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=num_examples, desc="listops", unit="ex")
    while len(lines) < num_examples:
        batch, _ = _draw_batch(rng, batch_size, cfg, parens)
        for line in batch:
            key = hashlib.blake2b(line[: line.rindex(b"\t")], digest_size=16).digest()
            if key not in seen:  # unique trees, as LRA's set
                seen.add(key)
                lines.append(line)
                if len(lines) == num_examples:
                    break
        if bar is not None:
            bar.n = len(lines)
            bar.refresh()
    if bar is not None:
        bar.close()
    return lines


def generate(num_examples: int, **kwargs) -> list[tuple[str, int]]:
    """``num_examples`` unique ListOps examples ``(source, target)``; options as :func:`generate_lines`."""
    out = []
    for line in generate_lines(num_examples, **kwargs):
        src, tgt = line.decode().split("\t")
        out.append((src, int(tgt)))
    return out


# ---------------------------------------------------------------- evaluation and tokenisation


def tokenize(source: str) -> list[str]:
    """LRA's preprocessing: drop '(' and ')', rename ']' to 'X', split on whitespace."""
    return source.translate({ord("]"): "X", ord("("): None, ord(")"): None}).split()


def evaluate(source: str) -> int:
    """Value of a ListOps expression (either spelling); a slow reference for tests and for checking files."""
    stack: list[list] = []
    result = None
    for tok in tokenize(source):
        if tok in OPERATORS:
            stack.append([tok])
        elif tok == "X":
            if not stack:
                raise ValueError(f"unbalanced ']' in {source[:60]!r}")
            op, *args = stack.pop()
            if not args:
                raise ValueError(f"operator {op} without arguments in {source[:60]!r}")
            val = {
                "[MIN": min(args),
                "[MAX": max(args),
                "[MED": int(np.median(args)),
                "[SM": sum(args) % 10,
            }[op]
            if stack:
                stack[-1].append(val)
            else:
                result = val
        elif tok.isdigit() and len(tok) == 1:
            if stack:
                stack[-1].append(int(tok))
            else:
                result = int(tok)
        else:
            raise ValueError(f"unknown ListOps token {tok!r}")
    if stack or result is None:
        raise ValueError(f"incomplete ListOps expression {source[:60]!r}")
    return result


def length_of(source: str) -> int:
    """LRA's length: 1 per digit, 2 per operator (its '[OP' and ']')."""
    return len(tokenize(source))


# ---------------------------------------------------------------- files


def split_sizes(num_examples: int) -> tuple[int, int, int]:
    """LRA's 96/2/2 split: 100,000 -> (96,000, 2,000, 2,000)."""
    held = max(1, round(0.02 * num_examples)) if num_examples >= 3 else 0
    return num_examples - 2 * held, held, held


def write_tsv(path: str | os.PathLike, examples: list[tuple[str, int]] | list[bytes]) -> None:
    """LRA's format: header ``Source\\tTarget``, one example per line; written atomically.

    ``examples`` are ``(source, target)`` pairs or ready lines ``b'SOURCE\\tTARGET'`` from :func:`generate_lines`.
    """
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        f.write(b"Source\tTarget\n")
        for ex in examples:
            f.write(ex + b"\n" if isinstance(ex, bytes) else f"{ex[0]}\t{ex[1]}\n".encode())
    os.replace(tmp, path)


def write_splits(
    out_dir: str | os.PathLike,
    num_examples: int,
    *,
    seed: int = 0,
    config: ListOpsConfig | None = None,
    parens: bool = True,
    progress: bool = False,
) -> dict[str, Path]:
    """Generate and write ``basic_{train,val,test}.tsv`` (LRA's file names) under ``out_dir``."""
    check_positive_int("num_examples", num_examples, minimum=3)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = generate_lines(num_examples, seed=seed, config=config, parens=parens, progress=progress)
    n_train, n_val, _ = split_sizes(num_examples)
    parts = {"train": lines[:n_train], "val": lines[n_train : n_train + n_val], "test": lines[n_train + n_val :]}
    paths = {}
    for split, part in parts.items():
        paths[split] = out_dir / f"basic_{split}.tsv"
        write_tsv(paths[split], part)
    return paths


def read_tsv(path: str | os.PathLike) -> list[tuple[str, int]]:
    """Read an LRA ListOps TSV (ours or the official release); errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ListOps file not found: {path}")
    csv.field_size_limit(1 << 30)
    out = []
    with open(path, newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["Source", "Target"]:
            raise ValueError(f"{path}: expected a header 'Source<TAB>Target', got {header!r}")
        for lineno, row in enumerate(reader, start=2):
            if len(row) != 2:
                raise ValueError(f"{path}:{lineno}: expected 2 tab-separated fields (Source, Target), got {len(row)}")
            src, tgt = row
            if not (tgt.strip().isdigit() and 0 <= int(tgt) <= 9):
                raise ValueError(f"{path}:{lineno}: field Target must be a digit 0-9, got {tgt!r}")
            out.append((src, int(tgt)))
    if not out:
        raise ValueError(f"{path}: no examples after the header")
    return out


def encode(examples: list[tuple[str, int]], max_len: int, *, source: str = "<memory>"):
    """Token ids ``[N, max_len]`` (0 = pad, right-padded) and labels ``[N]``.

    A sequence longer than ``max_len`` is an error, not a silent truncation (it would change the answer).
    """
    check_positive_int("max_len", max_len)
    ids = torch.zeros(len(examples), max_len, dtype=torch.long)
    labels = torch.empty(len(examples), dtype=torch.long)
    for i, (src, tgt) in enumerate(examples):
        toks = tokenize(src)
        if len(toks) > max_len:
            raise ValueError(
                f"{source}: example {i} has {len(toks)} tokens, more than max_len={max_len}; "
                "raise max_len (the model's max_len must allow it too)"
            )
        try:
            row = [TOKEN_TO_ID[t] for t in toks]
        except KeyError as e:
            raise ValueError(
                f"{source}: example {i} has unknown token {e.args[0]!r}; expected one of {VOCAB[2:]}"
            ) from None
        ids[i, : len(row)] = torch.tensor(row)
        labels[i] = tgt
    return ids, labels


def load_split(data_dir: str | os.PathLike, split: str, max_len: int) -> torch.utils.data.TensorDataset:
    """``basic_<split>.tsv`` from ``data_dir`` as a TensorDataset of (tokens [N, max_len], labels [N])."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    path = Path(data_dir) / f"basic_{split}.tsv"
    ids, labels = encode(read_tsv(path), max_len, source=str(path))
    return torch.utils.data.TensorDataset(ids, labels)
