"""Masked-LM pretraining from the pieces that exist: packed windows, static BERT masks, a bidirectional
LanguageModel and the framework's trainer; its encoder then starts a classifier (what GLUE fine-tuning does)."""

import pytest
import torch

from kernelized.data import mlm, wordpiece
from kernelized.models.backbone import LanguageModel
from kernelized.models.classifier import EncoderClassifier, encoder_config
from kernelized.train import TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")
SPECIAL = range(len(wordpiece.SPECIAL))


def test_windows_pack_sentences_between_cls_and_sep():
    w = mlm.pack_windows([[7, 8, 9], [10], [11, 12, 13, 14]], 6, wordpiece.CLS_ID, wordpiece.SEP_ID, wordpiece.PAD_ID)
    assert w.tolist() == [[2, 7, 8, 9, 10, 3], [2, 11, 12, 13, 14, 3]]
    w = mlm.pack_windows([[7, 8, 9, 10, 11]], 5, 2, 3, 0)
    assert w.tolist() == [[2, 7, 8, 9, 3], [2, 10, 11, 3, 0]]  # split across windows, the last one padded
    with pytest.raises(ValueError, match="no tokens"):
        mlm.pack_windows([[], []], 8, 2, 3, 0)


def _pairs_corpus(n: int, seed: int) -> torch.Tensor:
    """Windows whose halves repeat one token each: a masked token is recoverable from the unmasked ones around it
    (the first of each half only from its right)."""
    g = torch.Generator().manual_seed(seed)
    a, b = (torch.randint(5, 40, (n, 1), generator=g).expand(n, 15) for _ in range(2))
    return torch.cat([torch.full((n, 1), 2), a, b, torch.full((n, 1), 3)], 1)


@pytest.mark.parametrize("mixer", [{"mixer": "softmax", "num_heads": 2}, {"mixer": "kernel", "kernel": "rebased",
                                   "num_heads": 2, "feature_dim": 8}])  # fmt: skip
def test_a_bidirectional_masked_lm_learns_from_context_and_transfers_its_encoder(tmp_path, mixer):
    kw = {"mask_id": wordpiece.MASK_ID, "vocab_size": 40, "special_ids": SPECIAL, "first_random_id": 5}
    train, val = mlm.masked_dataset(_pairs_corpus(512, 0), 0, **kw), mlm.masked_dataset(_pairs_corpus(64, 1), 1, **kw)
    cfg = encoder_config(40, 32, 2, mixer, max_len=32)
    torch.manual_seed(0)
    model = LanguageModel(cfg)  # causal=False: a masked LM with the backbone every encoder uses
    config = TrainConfig(max_steps=300, batch_size=32, lr=3e-3, eval_every=300, progress=False, device="cpu")
    summary = Trainer(model, config, train, val, run_dir=tmp_path / "mlm").fit()
    assert summary["final"]["accuracy"] > 0.8  # chance is 1/35: the context gives the answer
    clf = EncoderClassifier(cfg, 2, pooling="cls", cls_id=wordpiece.CLS_ID, pad_id=wordpiece.PAD_ID)
    clf.encoder.load_state_dict(model.backbone.state_dict())  # fine-tuning starts from the pretrained encoder
    for name, p in model.backbone.state_dict().items():
        assert torch.equal(clf.encoder.state_dict()[name], p)
    assert clf(torch.randint(5, 40, (3, 10))).shape == (3, 2)
