"""Autoregressive generation with the mixers' own states: prefill once, then one token per step.

The prompt goes through the model in one call (kernel layers in their chunk form), which returns every
mixer's state; each new token then costs one step per layer:
  - kernel attention: the recurrent form, whose state ``(S [B,H,F,Dv], z [B,H,F])`` does not grow (constant
    memory per token -- the practical point of linear attention);
  - sliding-window attention: a ring buffer of the last ``window`` keys and values (constant too);
  - softmax attention: a KV cache that grows by one key and value per token;
  - BaseConv: the last ``kernel_size - 1`` inputs.
"""

from __future__ import annotations

import torch
from torch import nn

import kernelized.layers.sliding_window  # noqa: F401  (registers the "sliding_window" mixer)
from kernelized._checks import check_positive_int


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one token per row from ``logits [B, V]`` -> ``[B]``.

    ``temperature == 0`` is greedy (argmax); otherwise sample from ``softmax(logits / temperature)``, restricted
    to the ``top_k`` most likely tokens when top_k is given.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None:
        check_positive_int("top_k", top_k)
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _check_room(model: nn.Module, total: int) -> None:
    cfg = getattr(model, "cfg", None)
    if cfg is not None and cfg.positions != "none" and total > cfg.max_len:
        raise ValueError(
            f"prompt + max_new_tokens = {total} tokens exceeds max_len={cfg.max_len} of the model's "
            f"{cfg.positions} positions; shorten the prompt or generate fewer tokens"
        )


@torch.no_grad()
def generate(
    model: nn.Module,
    prompt: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
    prefill_mode: str = "chunk",
    decode_mode: str = "recurrent",
) -> torch.Tensor:
    """Continue ``prompt [B, T]`` (equal-length rows) by ``max_new_tokens`` tokens -> ``[B, T + max_new_tokens]``.

    Args:
        model: a :class:`kernelized.models.LanguageModel` (anything with
            ``model(tokens, state=..., output_state=True, mode=...) -> (logits [B, T, V], state)``).
        temperature: 0 = greedy; otherwise the sampling temperature.
        top_k: sample among the k most likely tokens only.
        eos_id: once a row emits it, that row keeps emitting it; generation stops early (returning fewer
            than max_new_tokens new tokens) once every row has.
        generator: a torch.Generator for reproducible sampling.
        prefill_mode, decode_mode: the kernel layers' forms for the prompt and for each new token.
    """
    if not isinstance(prompt, torch.Tensor) or prompt.dim() != 2 or prompt.is_floating_point():
        got = tuple(prompt.shape) if isinstance(prompt, torch.Tensor) else type(prompt).__name__
        raise ValueError(f"prompt must be an integer tensor [B, T] with T >= 1, got {got}")
    if prompt.shape[1] == 0:
        raise ValueError("prompt must hold at least one token per row, got T = 0")
    check_positive_int("max_new_tokens", max_new_tokens, minimum=0)
    _check_room(model, prompt.shape[1] + max_new_tokens)
    was_training = model.training
    model.eval()
    out = prompt
    logits, state = model(prompt, state=None, output_state=True, mode=prefill_mode)
    done = torch.zeros(prompt.shape[0], dtype=torch.bool, device=prompt.device)
    for i in range(max_new_tokens):
        token = sample_next(logits[:, -1], temperature, top_k, generator)
        if eos_id is not None:
            token = torch.where(done, torch.full_like(token, eos_id), token)
            done |= token == eos_id
        out = torch.cat([out, token[:, None]], dim=1)
        if i == max_new_tokens - 1 or (eos_id is not None and bool(done.all())):
            break
        logits, state = model(token[:, None], state=state, output_state=True, mode=decode_mode)
    model.train(was_training)
    return out


@torch.no_grad()
def incremental_logits(
    model: nn.Module,
    tokens: torch.Tensor,
    prefill: int,
    *,
    prefill_mode: str = "chunk",
    decode_mode: str = "recurrent",
) -> tuple[torch.Tensor, list[int]]:
    """Teacher-forced decoding: logits ``[B, T, V]`` from prefilling ``tokens[:, :prefill]`` in one call and feeding
    the rest one token at a time through the state, plus the state's size (numbers) after each step.

    Equal to ``model(tokens)`` at every position when the states are exact; the tests hold it to that.
    """
    check_positive_int("prefill", prefill)
    was_training = model.training
    model.eval()
    logits, state = model(tokens[:, :prefill], state=None, output_state=True, mode=prefill_mode)
    outs, sizes = [logits], [state_numel(state)]
    for t in range(prefill, tokens.shape[1]):
        step, state = model(tokens[:, t : t + 1], state=state, output_state=True, mode=decode_mode)
        outs.append(step)
        sizes.append(state_numel(state))
    model.train(was_training)
    return torch.cat(outs, dim=1), sizes


def state_numel(state) -> int:
    """How many numbers a (nested) decoding state holds: the memory that decoding carries."""
    if isinstance(state, torch.Tensor):
        return state.numel()
    if isinstance(state, dict):
        return sum(state_numel(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_numel(v) for v in state)
    return 0
