"""``reference="kl"``: the published KL-Transformer code's choices, where ours differ, for comparing with its numbers.

``kernels.build(name, d, H, reference="kl", reference_task="text")`` builds ``name`` as the code of "Learning the
Transformer Kernel" (``cs1160701/OnLearningTheKernel`` at commit ``a8e3d3b``; files below are in that repository)
runs it. Options passed explicitly still win over the reference's. What changes, with the code's file and line:

* **One draw for all heads.** The code keeps one noise buffer ``omega`` of shape ``(d, M)`` per layer, without a
  head axis (``fast_transformers/feature_maps/fourier_features.py`` l. 312-324 and 579-591, drawn in
  ``new_feature_map``; GMM-RKS's ``einsum('sm,hsd->hdm', self.omega, self.sigma)`` at l. 1002), and FastFood one
  permutation ``P`` (``feature_maps/fastfood.py`` l. 89) and one set of learned ``B, G, S`` of shape ``(d,)``
  (l. 71-83). Ours draw (and for FastFood learn) per head; here every head repeats head 0's draw, and FastFood's
  diagonals are one ``[1, D]`` set shared by the heads.
* **Draw policy.** GMM and Generator maps redraw in every forward call, evaluation included (``redraw=1,
  deterministic_eval=False``, l. 118, 525): ``redraw="step", eval_draw="stochastic"``. Performer redraws every
  1000 calls (``listops/model.py`` l. 97-107, ``retrieval/model.py`` l. 96-106) and evaluates with whatever draw
  is current: ``redraw=1000, eval_draw="current"``.
* **No PRF stabiliser** (``stabilize=False`` in every factory call; GMM-PRF and Generator-PRF have none at all).
* **Feature counts per task** (:func:`num_features`; P = pow2cast(d ln d)): GMM-RKS ``n_dims = 4P+1`` on ListOps
  (``listops/model.py`` l. 254-256), ``2d+1`` with smoothing 0.36 on Text (``text/model.py`` l. 246-250),
  ``2P+1`` on Retrieval (``retrieval/model.py`` l. 254-258), i.e. S = P, d/2, P/2 noise rows (each gives 4
  features); GMM-PRF ``n_dims = P`` (M = P); RFF and Generator-RKS ``2P+1`` (M = P); Generator-PRF ``P``, which
  its inherited "n_dims - 1, // 2" logic turns into (P-1)//2 frequencies (127 for d = 64); Performer ``2d``
  (M = d). The code's ``min(max_len, ...)`` caps only bind for sequences shorter than P and are not modelled.
* **The Performer quirk.** ``orthogonal_random_matrix_`` (``fourier_features.py`` l. 17-46) assigns ``w = Q *
  norms[None]`` to a local name in its ``rows == columns`` branch (l. 31-35) instead of writing into the buffer,
  so the frequencies stay all zero whenever ``n_dims / 2 == d``, which holds in every ``performer`` and
  ``rbf-positive`` call of its LRA scripts (``n_dims=2*self.d_query``). Its features are then the constant
  ``exp(-|x~|^2 / 2) / sqrt(2d)`` per token: attention weights ``exp(-|k~_j|^2 / 2) / sum_j ...`` that do not
  depend on the query. :class:`KLPerformer` reproduces this (its :meth:`~KLPerformer.kernel` is what it
  estimates, ``exp(-(|q~|^2 + |k~|^2) / 2)``); at any other M it draws correct orthogonal features.
* **The normaliser eps** is the code's already: ``LinearAttention(eps=1e-6)`` adds it to the denominator
  (``fast_transformers/attention/linear_attention.py`` l. 44, 74), as our ``KernelAttention(eps=1e-6)`` does.
"""

from __future__ import annotations

import torch
from torch import nn

from kernelized.kernels.base import FeatureMap
from kernelized.kernels.performer import PerformerFeatureMap
from kernelized.kernels.random_features import RandomFeatureMap, default_num_features

REFERENCES = ("kl",)
#: the tasks the code has scripts for (Image and Pathfinder have none)
TASKS = ("listops", "text", "retrieval")
_GMM_RKS_ROWS = {"listops": lambda d, P: P, "text": lambda d, P: d // 2, "retrieval": lambda d, P: P // 2}


class KLPerformer(PerformerFeatureMap):
    """Performer as the KL code draws it: zero frequencies when M == d and the draw is orthogonal (see above)."""

    @property
    def zero_frequencies(self) -> bool:
        return self.orthogonal and self.m == self.head_dim

    def draw(self, generator):
        noise = super().draw(generator)
        if self.zero_frequencies:  # fourier_features.py l. 31-35: the square branch never writes into omega
            noise["eps"] = torch.zeros_like(noise["eps"])
        return noise

    def kernel(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """With zero frequencies, the (exact) product of the constant features ``exp(-(|q~|^2 + |k~|^2) / 2)``."""
        if not self.zero_frequencies:
            return super().kernel(q, k)
        q, k = self._scaled_pair(q, k)
        return torch.exp(-self.norm_offset * ((q * q).sum(-1) + (k * k).sum(-1)))


def num_features(name: str, head_dim: int, task: str | None) -> dict:
    """The code's feature-count options for ``name`` on ``task`` (None: its ListOps rules), as our options."""
    P = default_num_features(head_dim)  # pow2cast(d ln d)
    if name == "gmm-rks":
        out = {"num_features": _GMM_RKS_ROWS[task or "listops"](head_dim, P)}
        return {**out, "smoothing": 0.36} if task == "text" else out
    counts = {"gmm-prf": P, "rff": P, "generative-rks": P, "generative-prf": (P - 1) // 2, "performer": head_dim}
    return {"num_features": counts[name]} if name in counts else {}


_DRAWS = {
    "performer": {"redraw": 1000, "eval_draw": "current", "stabilize": False},
    "rff": {"redraw": "step", "eval_draw": "stochastic", "orthogonal": False},
    "gmm-rks": {"redraw": "step", "eval_draw": "stochastic", "orthogonal": False},
    "gmm-prf": {"redraw": "step", "eval_draw": "stochastic", "orthogonal": False, "stabilize": False},
    "fastfood-rks": {"redraw": "step", "eval_draw": "stochastic"},
    "fastfood-prf": {"redraw": "step", "eval_draw": "stochastic", "stabilize": False},
    "generative-rks": {"redraw": "step", "eval_draw": "stochastic"},
    "generative-prf": {"redraw": "step", "eval_draw": "stochastic", "stabilize": False},
    "elu": {},  # the code's "linear" (elu + 1): the same map
}
COVERED = tuple(_DRAWS)


def _share_fastfood_diagonals(fm: RandomFeatureMap) -> None:
    """FastFood's learned B, G, S as one ``[1, D]`` set for all heads (fastfood.py l. 71-83)."""
    if getattr(fm, "learn", False):
        for name in ("B", "G", "S"):
            setattr(fm, name, nn.Parameter(getattr(fm, name).detach()[:1].clone()))


def build(cls: type[FeatureMap], name: str, head_dim: int, num_heads: int, reference: str, **options) -> FeatureMap:
    """``cls`` (the class registered as ``name``) built with the code's choices under the caller's ``options``."""
    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {list(REFERENCES)} (or None), got {reference!r}")
    if name not in COVERED:
        raise ValueError(f"reference='kl' covers the kernels of the KL code, {list(COVERED)}; got {name!r}")
    task = options.pop("reference_task", None)
    if task is not None and task not in TASKS:
        raise ValueError(f"reference_task must be one of {list(TASKS)} (the KL code's scripts) or None, got {task!r}")
    merged = {**_DRAWS[name], **num_features(name, head_dim, task), **options}
    fm = (KLPerformer if name == "performer" else cls)(head_dim=head_dim, num_heads=num_heads, **merged)
    if isinstance(fm, RandomFeatureMap):
        _share_fastfood_diagonals(fm)
        fm.share_draw_across_heads()
    return fm
