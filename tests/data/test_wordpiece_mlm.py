"""WordPiece: BERT's special ids, pair layout, longest-first truncation, save/load; MLM masking: BERT's rates,
specials never chosen, labels only where chosen, seeded."""

import pytest
import torch

from kernelized.data import mlm, wordpiece

LINES = ["the cat sat on the mat", "a dog ran in the park", "the cat and the dog", "dull long film"] * 20


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    path = tmp_path_factory.mktemp("wp") / "tokenizer.json"
    trained = wordpiece.train_wordpiece(LINES, 60, path)
    assert path.is_file()
    return trained, path


def test_special_ids_pairs_and_truncation(tok):
    trained, path = tok
    ids, seg = trained.encode("the cat sat", "a dog ran")
    assert ids[0] == wordpiece.CLS_ID and ids.count(wordpiece.SEP_ID) == 2 and ids[-1] == wordpiece.SEP_ID
    first_sep = ids.index(wordpiece.SEP_ID)
    assert seg == [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1)
    long_a, short_b = " ".join(["the cat sat on the mat"] * 5), "a dog"
    ids, seg = trained.encode(long_a, short_b, max_len=12)
    assert len(ids) == 12 and seg.count(1) == len(trained.tokens(short_b)) + 1  # the longer side lost the tokens
    single, seg = trained.encode(long_a, max_len=8)
    assert len(single) == 8 and single[-1] == wordpiece.SEP_ID and set(seg) == {0}
    again = wordpiece.WordPiece.load(path)
    assert again.encode("the cat sat", "a dog ran") == trained.encode("the cat sat", "a dog ran")
    assert again.decode(again.tokens("the dog")) == "the dog"


def test_bad_tokenizer_input_is_named(tmp_path):
    with pytest.raises(ValueError, match="vocab_size must be an integer >= 6"):
        wordpiece.train_wordpiece(LINES, 3)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        wordpiece.WordPiece.load(tmp_path / "none.json")


def test_bert_masking_rates_and_what_is_never_masked():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (64, 512), generator=g)
    ids[:, 0], ids[:, -1], ids[:, 400:] = wordpiece.CLS_ID, wordpiece.SEP_ID, wordpiece.PAD_ID
    kw = {"mask_id": wordpiece.MASK_ID, "vocab_size": 1000, "special_ids": range(5), "first_random_id": 5}
    inputs, labels = mlm.mask_tokens(ids, generator=torch.Generator().manual_seed(1), **kw)
    special = ids < 5
    chosen = labels != mlm.IGNORE
    assert not (chosen & special).any() and torch.equal(inputs[special], ids[special])
    assert torch.equal(labels[chosen], ids[chosen])
    assert abs(chosen.sum().item() / (~special).sum().item() - 0.15) < 0.01
    masked = (inputs == wordpiece.MASK_ID) & chosen
    kept = (inputs == ids) & chosen
    n = chosen.sum().item()
    assert abs(masked.sum().item() / n - 0.8) < 0.02 and abs(kept.sum().item() / n - 0.1 - 0.001) < 0.02
    assert torch.equal(inputs[~chosen], ids[~chosen])  # nothing else changes
    assert inputs[chosen & ~masked & ~kept].min() >= 5  # random replacements are ordinary word pieces
    same = mlm.mask_tokens(ids, generator=torch.Generator().manual_seed(1), **kw)
    assert torch.equal(same[0], inputs) and torch.equal(same[1], labels)  # a function of the seed
    with pytest.raises(ValueError, match="ids must be int64"):
        mlm.mask_tokens(ids.float(), generator=g, **kw)


def test_special_tokens_are_found_by_name_as_in_a_hub_vocabulary(monkeypatch):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    words = ["the", "cat", "dog", "##s"]
    vocab = {w: i for i, w in enumerate(words)} | {t: 100 + i for i, t in enumerate(wordpiece.SPECIAL)}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.normalizer, backend.pre_tokenizer = normalizers.BertNormalizer(), pre_tokenizers.BertPreTokenizer()
    tok = wordpiece.WordPiece(backend, "hub-like")
    assert (tok.pad_id, tok.cls_id, tok.sep_id, tok.mask_id) == (100, 102, 103, 104)
    assert tok.first_ordinary_id == 0 and set(tok.special_ids) == set(range(100, 105))
    ids, seg = tok.encode_batch([("the cats", "dog"), ("the bird", None)], max_len=16)
    assert ids.tolist() == [[102, 0, 1, 3, 103, 2, 103], [102, 0, 101, 103, 100, 100, 100]]  # bird: [UNK]
    assert seg.tolist() == [[0, 0, 0, 0, 0, 1, 1], [0] * 7]
    with pytest.raises(ValueError, match="lacks the special tokens"):
        wordpiece.WordPiece(Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="tokenizer.name '/no/such/tokenizer' could not be loaded"):
        wordpiece.WordPiece.from_pretrained("/no/such/tokenizer")
