import pytest

from kernelized.data.tokenizers import ByteTokenizer, HFTokenizer, load_tokenizer

TEXT = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog", "héllo wörld ✓"]


def test_byte_tokenizer_round_trip():
    tok = load_tokenizer("byte")
    assert isinstance(tok, ByteTokenizer) and tok.vocab_size == 257 and tok.eos_id == 256
    for text in TEXT:
        ids = tok.encode(text)
        assert all(0 <= i < 256 for i in ids) and len(ids) == len(text.encode("utf-8"))
        assert tok.decode(ids) == text
    assert tok.decode([104, 105, 256, 33]) == "hi!"  # end-of-document token dropped
    assert tok.decode([0xE2, 0x9C]) == "\ufffd"  # cut multi-byte character decodes, does not raise


@pytest.fixture(scope="module")
def bpe_json(tmp_path_factory):
    """A small BPE tokenizer trained here with the `tokenizers` library and saved as tokenizer.json."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(TEXT * 5, trainers.BpeTrainer(vocab_size=60, special_tokens=["<unk>", "</s>"]))
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


def test_tokenizers_json_file_and_folder(bpe_json):
    for name in (str(bpe_json), str(bpe_json.parent)):
        tok = load_tokenizer(name)
        assert isinstance(tok, HFTokenizer)
        assert tok.eos_id == 1 and tok.vocab_size <= 60
        ids = tok.encode("the cat sat on the log")
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids).replace(" ", "") == "thecatsatonthelog"
        assert tok.encode("the cat") != tok.encode("the dog")


def test_transformers_tokenizer_folder(bpe_json, tmp_path):
    transformers = pytest.importorskip("transformers")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(bpe_json), eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(tmp_path / "hf_tok")
    tok = load_tokenizer(str(tmp_path / "hf_tok"))
    assert tok._is_transformers and tok.eos_id == 1
    reference = load_tokenizer(str(bpe_json))
    assert tok.encode("a cat and a dog") == reference.encode("a cat and a dog")
    assert tok.vocab_size == reference.vocab_size


def test_missing_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="could not be found"):
        load_tokenizer(str(tmp_path / "no" / "such" / "tokenizer"))
    with pytest.raises(ValueError, match="could not be found"):
        load_tokenizer("./missing_tokenizer_dir")
    with pytest.raises(ValueError, match="tokenizer must be"):
        load_tokenizer("")
