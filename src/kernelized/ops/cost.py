"""The cost model behind ``mode="auto"``: which exact form of linear attention is cheapest for one call.

All forms give the same outputs (to round-off), so the choice is only about time. Costs are per token of one head,
forward + backward, in FLOP-equivalents: the useful multiply-adds (2 FLOPs each) of the form's products, plus the
memory-bound elementwise work priced per element touched. Batch and heads scale every form alike and cancel.

- ``chunk``: the ``[F, Dv+1]`` state read and updated per token, plus (causal) the in-chunk products;
- ``parallel``: the query-key pairs: the implicit ``(q.k)^p`` form on the d-dimensional inputs for polynomial
  maps (rebased, taylor; its kernels skip the masked half of a causal square), the masked product of F features
  otherwise (the whole square); each pair's elementwise work beyond the products costs ``implicit_score`` or
  ``quadratic_score``;
- features: forming ``[T, F]`` query and key features (and their gradients) costs ``feature_element`` per feature
  element: memory-bound passes over wide tensors, the dominant cost of the chunk form at short T; the implicit
  form never forms them;
- ``recurrent``: a decoding step (one token, a state in): the cheapest form there (chunk pads to a chunk).

The constants are calibrated per device kind: on this project's 2-core CPU by ``docs/bench/forms/crossover.py``
(committed with its output, ``crossover.txt``); on CUDA they are the CPU's with the score passes fused away and the
causal square halved, as the Triton kernels do (not yet measured on a GPU).
"""

from __future__ import annotations

from dataclasses import dataclass

FORMS = ("parallel", "chunk", "recurrent")


@dataclass(frozen=True)
class Device:
    """Per-device constants of the cost model (FLOP-equivalents per element)."""

    implicit_score: float  # one query-key pair of the implicit form, forward + backward, beyond its products
    quadratic_score: float  # one pair of the materialised T x T product of features (unfused torch ops)
    feature_element: float  # one feature of q or k, forward + backward (forming it, and its memory traffic)
    implicit_half: bool  # the implicit form skips the masked half of the causal square (its kernels do)


# calibrated on the 2-core CPU: docs/bench/forms/crossover.txt (causal and bidirectional crossovers of rebased and
# taylor near T = 1k: there the two forms came within 7 % of each other but for bidirectional rebased, whose chunk
# form was 1.28x faster; the chunk form 1.65-2.1x faster at 2k; the materialised product never won).
# feature_element was 400 until the chunk form's features and the bidirectional op got faster (sessions 6-7) and the
# crossovers moved below the 1.6-1.9k it gave; 160 puts the model's switch at T = 0.98-1.15k for the four
# (docs/bench/forms/auto_switch.txt).
CPU = Device(implicit_score=0.0, quadratic_score=1000.0, feature_element=160.0, implicit_half=True)
# the Triton kernels skip the masked blocks too; CUDA takes the CPU's constants until a GPU run calibrates its own
DEVICES = {"cpu": CPU, "cuda": CPU}


def costs(
    T: int, d: int, F: int, Dv: int, causal: bool, device: str = "cpu", polynomial: bool = False, chunk_size: int = 64
) -> dict[str, float]:
    """Per-token cost of the ``parallel`` and ``chunk`` forms, forward + backward (see the module docstring).

    Args: T the length; d the q/k head size before the feature map; F the number of features; Dv the value size;
    polynomial: the map has an implicit form (``parallel`` then never forms features); device ``"cpu"``/``"cuda"``.
    """
    dev = DEVICES.get(device, CPU)
    features = 2 * F * dev.feature_element  # query and key features of one token
    if polynomial:  # the implicit form: (q.k)^p on the d-dimensional inputs, no features
        pairs = T / 2 if causal and dev.implicit_half else T
        parallel = 3 * 2 * pairs * (d + Dv + 1) + pairs * dev.implicit_score
    else:  # the masked product of features: the whole square, in torch ops
        parallel = 3 * 2 * T * (F + Dv + 1) + T * dev.quadratic_score + features
    C = min(chunk_size, T)
    chunk = 3 * 2 * (2 * F * (Dv + 1) + (C / 2 * (F + Dv + 1) if causal else 0)) + features
    return {"parallel": parallel, "chunk": chunk}


def choose_form(
    T: int,
    d: int,
    F: int,
    Dv: int,
    causal: bool,
    device: str = "cpu",
    *,
    polynomial: bool = False,
    stateful: bool = False,
    chunk_size: int = 64,
) -> str:
    """The cheapest exact form for one call: ``"recurrent"`` for a one-token step with a state, ``"chunk"`` when a
    state goes in or out of a longer call (the implicit form keeps none), else the cheaper of ``"parallel"`` and
    ``"chunk"`` by :func:`costs`."""
    if stateful:
        return "recurrent" if T == 1 else "chunk"
    c = costs(T, d, F, Dv, causal, device, polynomial, chunk_size)
    return "parallel" if c["parallel"] < c["chunk"] else "chunk"
