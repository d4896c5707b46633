"""ListOps: LRA's rules, LRA's serialisation, determinism, uniqueness, TSV round trips and bad files."""

from __future__ import annotations

import numpy as np
import pytest

from kernelized.data import cli, listops
from kernelized.data.listops import ListOpsConfig

SMALL = ListOpsConfig(max_depth=5, max_args=5, min_length=10, max_length=60)


def parse(source: str):
    """Bare or paren form -> nested lists ``[op, child, ...]`` / ints; fails on malformed input."""
    stack, root = [], None
    for tok in listops.tokenize(source):
        if tok in listops.OPERATORS:
            stack.append([tok])
        elif tok == "X":
            node = stack.pop()
            if stack:
                stack[-1].append(node)
            else:
                root = node
        else:
            stack[-1].append(int(tok))
    assert not stack
    return root


def lra_to_string(node) -> str:
    """LRA's generate_tree + to_string(parens=True), written independently of the generator."""

    def build(n):
        if isinstance(n, int):
            return n
        op, *children = n
        t = (op, build(children[0]))
        for c in children[1:]:
            t = (t, build(c))
        return (t, "]")

    def to_string(t):
        if isinstance(t, (str, int)):
            return str(t)
        return "( " + to_string(t[0]) + " " + to_string(t[1]) + " )"

    return to_string(build(node))


def depth_and_args(node, depth=1):
    if isinstance(node, int):
        return depth - 1, []
    op, *children = node
    results = [depth_and_args(c, depth + 1) for c in children]
    return max([depth] + [r[0] for r in results]), [len(children)] + [a for r in results for a in r[1]]


def test_examples_follow_lra_rules_with_default_config():
    examples = listops.generate(40, seed=3)
    for src, tgt in examples:
        assert listops.evaluate(src) == tgt
        assert 500 < listops.length_of(src) < 2000
        tree = parse(src)
        depth, args = depth_and_args(tree)
        assert depth <= 9  # operators at depths 1..9; depth 10 holds digits only
        assert min(args) >= 2 and max(args) <= 10
        assert set(listops.tokenize(src)) <= set(listops.VOCAB[2:])
    assert len({s for s, _ in examples}) == len(examples)


def test_paren_form_is_exactly_lras_to_string():
    bare = listops.generate(50, seed=1, config=SMALL, parens=False)
    paren = listops.generate(50, seed=1, config=SMALL, parens=True)  # same random draws, other spelling
    for (b, tb), (p, tp) in zip(bare, paren):
        assert tb == tp
        assert lra_to_string(parse(b)) == p
    assert lra_to_string(parse("[MAX 2 9 [MIN 4 7 ] 0 ]")) == (
        "( ( ( ( ( [MAX 2 ) 9 ) ( ( ( [MIN 4 ) 7 ) ] ) ) 0 ) ] )"
    )


def test_values_match_the_slow_evaluator_on_many_small_trees():
    examples = listops.generate(400, seed=0, config=SMALL, parens=False)
    for src, tgt in examples:
        assert listops.evaluate(src) == tgt
        assert SMALL.min_length < listops.length_of(src) < SMALL.max_length
    ops = {listops.tokenize(s)[0] for s, _ in examples}
    assert ops == set(listops.OPERATORS)  # every operator shows up at the root
    assert len(set(t for _, t in examples)) == 10


def test_semantics_of_each_operator():
    assert listops.evaluate("[MIN 3 1 4 ]") == 1
    assert listops.evaluate("[MAX 3 1 4 ]") == 4
    assert listops.evaluate("[MED 3 4 ]") == 3  # int(3.5): LRA truncates a .5 median
    assert listops.evaluate("[MED 9 1 5 ]") == 5
    assert listops.evaluate("[SM 9 8 7 ]") == 4
    assert listops.evaluate("[MAX 2 9 [MIN 4 7 ] 0 ]") == 9


def test_deterministic_by_seed():
    a = listops.generate(30, seed=7, config=SMALL)
    assert a == listops.generate(30, seed=7, config=SMALL)
    assert a != listops.generate(30, seed=8, config=SMALL)


def test_unique_trees_even_when_few_exist():
    tiny = ListOpsConfig(max_depth=2, max_args=2, min_length=3, max_length=5)  # only [OP a b ]: 4 * 100 trees
    examples = listops.generate(300, seed=0, config=tiny)
    assert len({s for s, _ in examples}) == 300


def test_tsv_round_trip_and_lra_split(tmp_path):
    paths = listops.write_splits(tmp_path, 100, seed=0, config=SMALL)
    assert {p.name for p in paths.values()} == {"basic_train.tsv", "basic_val.tsv", "basic_test.tsv"}
    parts = {k: listops.read_tsv(p) for k, p in paths.items()}
    assert [len(parts[k]) for k in ("train", "val", "test")] == [96, 2, 2]
    assert sum(parts.values(), []) == listops.generate(100, seed=0, config=SMALL)
    assert paths["train"].read_text().startswith("Source\tTarget\n")


def test_reads_the_official_format_and_tokenises_like_lra(tmp_path):
    (tmp_path / "basic_test.tsv").write_text("Source\tTarget\n( ( ( [MAX 2 ) 9 ) ] )\t9\n[SM 1 [MIN 4 7 ] ]\t5\n")
    ds = listops.load_split(tmp_path, "test", max_len=8)
    tokens, labels = ds.tensors
    ids = listops.TOKEN_TO_ID
    assert tokens[0].tolist() == [ids["[MAX"], ids["2"], ids["9"], ids["X"], 0, 0, 0, 0]
    assert tokens[1, :6].tolist() == [ids["[SM"], ids["1"], ids["[MIN"], ids["4"], ids["7"], ids["X"]]
    assert labels.tolist() == [9, 5]


def test_split_sizes():
    assert listops.split_sizes(100_000) == (96_000, 2_000, 2_000)
    assert sum(listops.split_sizes(7)) == 7


@pytest.mark.parametrize(
    "content, match",
    [
        ("", "header"),
        ("Src\tTgt\n[MAX 1 2 ]\t2\n", "header"),
        ("Source\tTarget\n[MAX 1 2 ]\n", r":2: expected 2 tab-separated fields"),
        ("Source\tTarget\n[MAX 1 2 ]\t2\n[MAX 1 2 ]\tten\n", r":3: field Target"),
        ("Source\tTarget\n", "no examples"),
    ],
)
def test_corrupt_files_name_file_and_line(tmp_path, content, match):
    path = tmp_path / "basic_train.tsv"
    path.write_text(content)
    with pytest.raises(ValueError, match=match) as err:
        listops.read_tsv(path)
    assert str(path) in str(err.value)


def test_missing_file_unknown_token_and_too_long(tmp_path):
    with pytest.raises(FileNotFoundError, match="basic_val.tsv"):
        listops.load_split(tmp_path, "val", max_len=10)
    with pytest.raises(ValueError, match="split must be one of"):
        listops.load_split(tmp_path, "dev", max_len=10)
    (tmp_path / "basic_train.tsv").write_text("Source\tTarget\n[MAX 1 [AVG 2 3 ] ]\t2\n")
    with pytest.raises(ValueError, match=r"basic_train.tsv: example 0 has unknown token '\[AVG'"):
        listops.load_split(tmp_path, "train", max_len=10)
    (tmp_path / "basic_test.tsv").write_text("Source\tTarget\n[MAX 1 2 3 4 ]\t4\n")
    with pytest.raises(ValueError, match="6 tokens, more than max_len=5"):
        listops.load_split(tmp_path, "test", max_len=5)
    with pytest.raises(ValueError, match="max_length must exceed"):
        listops.generate(3, config=ListOpsConfig(min_length=10, max_length=11))


def test_cli_writes_three_files(tmp_path, capsys):
    out = tmp_path / "lo"
    args = ["listops", "--out", str(out), "--num-examples", "50", "--seed", "2", "--min-length", "10"]
    args += ["--max-length", "60", "--max-depth", "5", "--max-args", "5", "--no-parens"]
    assert cli.main(args) == 0
    train = listops.read_tsv(out / "basic_train.tsv")
    assert len(train) == 48 and all("(" not in s for s, _ in train)
    assert np.all([listops.evaluate(s) == t for s, t in train])
    assert cli.main(["listops", "--out", str(out), "--num-examples", "2"]) == 2
    assert "--num-examples must be >= 3" in capsys.readouterr().err
