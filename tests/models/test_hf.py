import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from kernelized.models import LanguageModel, ModelConfig  # noqa: E402
from kernelized.models.generation import generate  # noqa: E402
from kernelized.models.hf import KernelizedConfig, KernelizedForCausalLM  # noqa: E402

V = 41


pytestmark = pytest.mark.usefixtures("one_thread")


def native(tie=True, positions="sinusoidal") -> LanguageModel:
    """Every mixer type, a random-feature kernel (buffers + extra state) and a non-persistent sinusoidal table."""
    blocks = [
        {"mixer": {"mixer": "baseconv"}, "mlp": "swiglu"},
        {"mixer": {"mixer": "kernel", "kernel": "performer", "num_heads": 2, "feature_dim": 4}, "mlp": "swiglu"},
        {"mixer": {"mixer": "kernel", "kernel": "rebased", "num_heads": 2, "feature_dim": 4}, "mlp": None},
        {"mixer": {"mixer": "sliding_window", "num_heads": 2, "window": 3}, "mlp": "swiglu"},
        {"mixer": {"mixer": "softmax", "num_heads": 2}, "mlp": None},
    ]
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=V, d_model=16, blocks=blocks, positions=positions, max_len=32, tie_embeddings=tie)
    model = LanguageModel(cfg).eval()
    with torch.no_grad():  # move ReBased's gamma/beta off their init so a reload that re-initialised would show
        for name, p in model.named_parameters():
            if "feature_map" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("tie,positions", [(True, "sinusoidal"), (False, "learned")])
def test_save_and_auto_load_give_the_native_logits(tmp_path, tie, positions):
    model = native(tie, positions)
    hf = KernelizedForCausalLM.from_native(model).eval()
    x = torch.randint(0, V, (2, 11))
    with torch.no_grad():
        ref = model(x)
        torch.testing.assert_close(hf(x).logits, ref, rtol=0, atol=0)
    hf.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not (tmp_path / "pytorch_model.bin").exists()
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "kernelized"
    assert isinstance(transformers.AutoConfig.from_pretrained(tmp_path), KernelizedConfig)
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(back, KernelizedForCausalLM)
    assert (back.model.head.weight is back.model.backbone.embed.weight) == tie
    with torch.no_grad():
        torch.testing.assert_close(back(x).logits, ref, rtol=1e-6, atol=1e-6)
    from safetensors.torch import load_file

    stored = load_file(tmp_path / "model.safetensors")
    assert any("feature_map" in k for k in stored)  # learned kernel parameters and random draws are saved


def test_loss_padding_and_generate():
    model = native()
    hf = KernelizedForCausalLM.from_native(model).eval()
    x = torch.randint(0, V, (2, 9))
    with torch.no_grad():
        out = hf(x, labels=x)
        expected = torch.nn.functional.cross_entropy(model(x)[:, :-1].reshape(-1, V), x[:, 1:].reshape(-1))
        torch.testing.assert_close(out.loss, expected)
        mask = torch.ones_like(x)
        mask[1, 6:] = 0  # right padding leaves the real tokens' logits unchanged
        padded = hf(x, attention_mask=mask).logits
        torch.testing.assert_close(padded[1, :6], model(x[1:, :6])[0], rtol=1e-5, atol=1e-5)
    ours = generate(model, x[:, :5], 6, temperature=0)
    theirs = hf.generate(x[:, :5], max_new_tokens=6, do_sample=False, attention_mask=torch.ones_like(x[:, :5]))
    assert torch.equal(theirs, ours)


def test_from_config_and_bad_config():
    cfg = KernelizedConfig.from_model_config(native().cfg)
    model = transformers.AutoModelForCausalLM.from_config(cfg)
    assert isinstance(model, KernelizedForCausalLM) and cfg.vocab_size == V and cfg.num_hidden_layers == 5
    with pytest.raises(ValueError, match="positions"):
        KernelizedConfig(model_config={**native().cfg.to_dict(), "positions": "rope"})
    with pytest.raises(ValueError, match="model_config is empty"):
        KernelizedForCausalLM(KernelizedConfig())


@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_the_cache_carries_every_mixers_state_logits_equal_the_full_forward(positions):
    from kernelized.models.hf_cache import KernelizedCache

    model = native(positions=positions)
    hf = KernelizedForCausalLM.from_native(model).eval()
    x = torch.randint(0, V, (2, 14))
    with torch.no_grad():
        full = model(x)
        out = hf(x[:, :6], use_cache=True)
        assert isinstance(out.cache, KernelizedCache) and out.cache.get_seq_length() == 6
        steps = [out.logits]
        for t in range(6, 14):  # then one token at a time through the state
            out = hf(x[:, t : t + 1], cache=out.cache, use_cache=True)
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-5, atol=1e-5)
    kinds = [type(s).__name__ for s in out.cache.state["blocks"]]
    assert kinds == ["Tensor", "tuple", "tuple", "dict", "dict"]  # conv inputs, (S, z) twice, ring buffer, KV


def test_hf_generate_with_the_cache_equals_native_and_uncached_decoding():
    model = native(positions="learned")
    hf = KernelizedForCausalLM.from_native(model).eval()
    x = torch.randint(1, V, (2, 9))
    kw = {"max_new_tokens": 10, "pad_token_id": 0}
    assert torch.equal(hf.generate(x, do_sample=False, **kw), generate(model, x, 10, temperature=0))
    beams = {c: hf.generate(x, num_beams=3, do_sample=False, use_cache=c, **kw) for c in (True, False)}
    assert torch.equal(beams[True], beams[False])  # the cache follows the beams (reorder_cache)
    sampled = {}
    for c in (True, False):
        torch.manual_seed(3)
        sampled[c] = hf.generate(x, do_sample=True, top_k=5, use_cache=c, **kw)
    assert torch.equal(sampled[True], sampled[False])
    torch.manual_seed(3)
    beam_sample = hf.generate(x, do_sample=True, num_beams=2, num_return_sequences=2, use_cache=True, **kw)
    assert beam_sample.shape == (4, 19)


@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_a_left_padded_batch_decodes_each_row_as_if_alone(positions):
    model = native(positions=positions)
    hf = KernelizedForCausalLM.from_native(model).eval()
    long, short = torch.randint(1, V, (1, 9)), torch.randint(1, V, (1, 5))
    batch = torch.cat([long, torch.cat([torch.zeros(1, 4, dtype=torch.long), short], 1)])
    mask = torch.ones_like(batch)
    mask[1, :4] = 0
    kw = {"max_new_tokens": 7, "do_sample": False, "pad_token_id": 0}
    both = hf.generate(batch, attention_mask=mask, **kw)
    assert torch.equal(both[0], hf.generate(long, **kw)[0])
    assert torch.equal(both[1, 9:], hf.generate(short, **kw)[0, 5:])
    assert torch.equal(both, hf.generate(batch, attention_mask=mask, use_cache=False, **kw))


def test_generating_past_max_len_is_one_clear_error():
    hf = KernelizedForCausalLM.from_native(native(positions="learned")).eval()  # max_len 32
    with pytest.raises(ValueError, match="exceeds max_len=32"):
        hf.generate(torch.randint(1, V, (1, 30)), max_new_tokens=5, do_sample=False, pad_token_id=0)
