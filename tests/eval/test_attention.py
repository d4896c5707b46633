import pytest
import torch

from kernelized.eval.attention import (
    attention_maps,
    best_head_iou,
    draw_maps,
    gamma_beta_stats,
    map_iou,
    model_maps,
    query_rows,
    set_iou,
    sliding_window_weights,
    top_mass_sets,
)
from kernelized.models import LanguageModel, ModelConfig
from kernelized.models.classifier import DualEncoderClassifier, EncoderClassifier, encoder_config


def _random_maps(B=2, H=3, T=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(B, H, T, T, generator=g).tril()
    return w / w.sum(-1, keepdim=True)


def test_iou_of_a_map_with_itself_is_one():
    a = _random_maps()
    assert torch.allclose(map_iou(a, a), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(map_iou(a, a.clone(), mass=0.5), torch.ones(2, dtype=torch.float64))


def test_iou_of_disjoint_maps_is_zero():
    T = 6
    eye = torch.eye(T)[None, None]  # every query looks at itself
    first = torch.zeros(1, 1, T, T)
    first[..., 0] = 1.0  # every query looks at token 0
    mask = torch.ones(1, T, dtype=torch.bool)
    mask[0, 0] = False  # row 0 is the same in both maps
    assert map_iou(eye, first, query_mask=mask).item() == 0.0


def test_hand_made_example():
    # row a: 0.5, 0.25, 0.125, 0.125 -> 0.875 of the mass needs keys {0, 1, 2}
    # row b: 0.0625, 0.4375, 0.4375, 0.0625 -> 0.875 needs keys {1, 2}; IoU = 2 / 3
    a = torch.tensor([[[0.5, 0.25, 0.125, 0.125]]])
    b = torch.tensor([[[0.0625, 0.4375, 0.4375, 0.0625]]])
    sa, sb = top_mass_sets(a, 0.875), top_mass_sets(b, 0.875)
    assert sa.tolist() == [[[True, True, True, False]]]
    assert sb.tolist() == [[[False, True, True, False]]]
    assert map_iou(a, b, mass=0.875).item() == pytest.approx(2 / 3)
    assert set_iou(sa, sb).item() == pytest.approx(2 / 3)


def test_top_mass_sets_hold_the_mass_and_are_minimal():
    w = _random_maps(B=3, H=2, T=9, seed=1).double()
    for mass in (0.3, 0.9, 1.0):
        sets = top_mass_sets(w, mass)
        held = (w * sets).sum(-1) / w.sum(-1)
        assert (held >= mass * (1 - 1e-9)).all()
        # dropping the smallest member loses the target: no smaller set of the top keys would do
        smallest = torch.where(sets, w, torch.full_like(w, 2.0)).min(-1).values
        assert (held - smallest / w.sum(-1) < mass).all()


def test_query_mask_selects_rows():
    a = _random_maps(B=1, H=1, T=5, seed=2)
    b = a.clone()
    b[0, 0, 4] = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0])  # only the last row differs
    only_last = torch.zeros(1, 5, dtype=torch.bool)
    only_last[0, 4] = True
    assert map_iou(a, b, query_mask=only_last).item() < 1.0
    assert map_iou(a, b, query_mask=~only_last).item() == 1.0


@pytest.mark.parametrize(
    "mixer",
    [
        {"mixer": "kernel", "kernel": "rebased", "num_heads": 3, "feature_dim": 4},
        {"mixer": "kernel", "kernel": "elu", "num_heads": 2, "feature_dim": 4},
        {"mixer": "kernel", "kernel": "taylor", "num_heads": 2, "feature_dim": 4, "mode": "parallel"},
        {"mixer": "softmax", "num_heads": 2},
    ],
)
def test_maps_of_a_model_are_causal_and_rows_sum_to_one(mixer):
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=20, d_model=12, blocks=[{"mixer": {"mixer": "baseconv"}}, {"mixer": mixer}] * 2, max_len=16
    )
    model = LanguageModel(cfg)
    tokens = torch.randint(0, 20, (2, 10))
    maps = attention_maps(model, tokens)
    assert len(maps) == 2  # the two attention layers, not the convolutions
    for m in maps.values():
        assert m.shape == (2, mixer["num_heads"], 10, 10)
        assert torch.allclose(m.sum(-1), torch.ones(2, mixer["num_heads"], 10), atol=1e-4)
        assert (m >= 0).all() and (m.triu(1) == 0).all()
    # the caught inputs are the ones the model used: the maps reproduce the first layer's output
    layer = model.backbone.blocks[1].mixer
    x = model.backbone.blocks[1].norm1(model.backbone.blocks[0](model.backbone.embed_tokens(tokens))[0])
    assert torch.allclose(maps["backbone.blocks.1.mixer"], layer.attention_weights(x), atol=1e-6)
    assert model.training  # mode restored


def test_gamma_beta_stats_read_the_rebased_parameters():
    cfg = ModelConfig(
        vocab_size=20,
        d_model=12,
        blocks=[{"mixer": {"mixer": "kernel", "kernel": "rebased", "num_heads": 2, "feature_dim": 4}}],
        max_len=8,
    )
    model = LanguageModel(cfg)
    with torch.no_grad():
        model.backbone.blocks[0].mixer.feature_map.gamma_q.copy_(torch.arange(8.0).view(2, 4))
    rows = {r["param"]: r for r in gamma_beta_stats(model)}
    assert set(rows) == {"gamma_q", "gamma_k", "beta_q", "beta_k"}
    assert rows["gamma_q"]["mean"] == pytest.approx(3.5)
    assert rows["gamma_q"]["std"] == pytest.approx(torch.arange(8.0).std().item())
    assert rows["gamma_k"]["mean"] == 1.0 and rows["beta_k"]["std"] == 0.0


def test_draw_maps_writes_a_png(tmp_path):
    path = draw_maps({"a": torch.eye(5), "b": torch.ones(5, 5) / 5}, tmp_path / "maps.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    marks = torch.tensor([True, False, True, False, False])
    maps = {"a": torch.eye(5), "gap": None, "b": torch.ones(5, 5) / 5}  # None: an empty cell, b starts row 2
    assert draw_maps(maps, tmp_path / "grid.png", marks=marks, cols=2).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("causal", [True, False])
def test_sliding_window_maps_reproduce_the_layer(causal):
    torch.manual_seed(0)
    window, T = 3, 9
    cfg = ModelConfig(
        vocab_size=20,
        d_model=16,
        blocks=[{"mixer": {"mixer": "baseconv"}}, {"mixer": {"mixer": "sliding_window", "num_heads": 2, "window": 3}}],
        max_len=16,
        causal=causal,
    )
    model = LanguageModel(cfg) if causal else EncoderClassifier(cfg, 2, pooling="mean")
    maps = model_maps(model, torch.randint(2, 20, (2, T)))
    assert len(maps) == 1  # the window layer; the convolution has none
    (m,) = maps.values()
    dist = torch.arange(T)[:, None] - torch.arange(T)[None]
    band = (dist >= 0) & (dist < window) if causal else dist.abs() < window
    assert m.shape == (2, 2, T, T) and (m[..., ~band] == 0).all()
    assert torch.allclose(m.sum(-1), torch.ones(2, 2, T), atol=1e-5)
    layer = dict(model.named_modules())[next(iter(maps))]
    x, pad = torch.randn(2, T, 16), torch.zeros(2, T, dtype=torch.bool)
    pad[1, -2:] = True
    w = sliding_window_weights(layer, x, pad)
    v = layer.qkv(x).view(2, T, 3, 2, 8)[:, :, 2]  # [B, T, H, Dh]
    y = layer.out(torch.einsum("bhts,bshd->bthd", w, v).reshape(2, T, 16))
    assert torch.allclose(y, layer(x, key_padding_mask=pad), atol=1e-5)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_classifier_maps_and_their_query_rows(pooling):
    torch.manual_seed(0)
    mixer = {"mixer": "kernel", "kernel": "elu", "num_heads": 2, "feature_dim": 4}
    cfg = encoder_config(30, 16, 2, mixer, max_len=13)
    model = EncoderClassifier(cfg, 3, pooling=pooling)
    tokens = torch.randint(2, 30, (2, 12))
    tokens[0, 5:], tokens[1, 8:] = 0, 0  # right padding; columns 8.. are padding in every row
    maps = model_maps(model, tokens)
    cls = pooling == "cls"
    T = 8 + cls  # the model cuts the all-padding columns and prepends [CLS]
    assert list(maps) == ["encoder.blocks.0.mixer", "encoder.blocks.1.mixer"]
    for m in maps.values():
        assert m.shape == (2, 2, T, T)
        assert (m[0, :, :, cls + 5 :] == 0).all()  # padded keys get no weight
        assert torch.allclose(m.sum(-1), torch.ones(2, 2, T), atol=1e-4)
    rows = query_rows(model, tokens != 0, T)
    assert rows[0].tolist() == [True] * cls + [True] * 5 + [False] * 3
    assert rows[1].all()
    with pytest.raises(ValueError, match="do not fit"):
        query_rows(model, tokens != 0, 14)
    # two towers: the shared tower's maps on one input, the same as the model run on that input twice
    dual = DualEncoderClassifier(cfg, 2, pooling=pooling)
    one, twice = model_maps(dual, tokens), attention_maps(dual, tokens, tokens)
    assert list(one) == ["tower.encoder.blocks.0.mixer", "tower.encoder.blocks.1.mixer"]
    assert all(torch.equal(one[k], twice[k]) for k in one)
    assert query_rows(dual, tokens != 0, T).shape == (2, T)


def test_best_head_finds_the_head_that_matches():
    ref = _random_maps(B=2, H=1, T=6, seed=3)
    uniform = torch.ones(6, 6).tril()
    uniform = (uniform / uniform.sum(-1, keepdim=True)).expand(2, 6, 6)
    heads = torch.stack([uniform, ref[:, 0], uniform], dim=1)  # head 1 is the reference itself
    head, iou = best_head_iou(heads, ref)
    assert head == 1 and iou == pytest.approx(1.0)
    assert map_iou(heads, ref).mean().item() < 1.0  # the head mean blurs it
