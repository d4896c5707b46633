"""Learned spectral kernels, looked at: the frequency distribution of each head and the kernel it gives.

For every learned random-feature map of a model (GMM, FastFood with learned diagonals, Generator):

* **GMM:** each component's mean and covariance projected on the head's top two principal directions (of the
  mixture's second moment ``sum_c pi_c (Sigma_c + mu_c mu_c')``), drawn as the mean and its 1-sigma ellipse;
* **FastFood:** the learned scales ``S`` per head, sorted;
* **Generator:** frequencies it generates (evaluation mode) projected on their top two principal directions;
* **the kernel** ``k(delta) = kernel(q = delta, k = 0)`` along unit directions (the head's top principal direction
  and two seeded random ones) for ``|delta~| = |delta| d^(-1/4)`` from 0 to 4. For RKS maps this is the
  shift-invariant kernel ``k(q~ - k~)`` itself; PRF kernels are not shift-invariant, and this is their profile as a
  query moves away from a zero key.

Each is computed for the trained map and, when given, for the same map at initialisation (the run's model rebuilt
with its seed before training), so the figure shows what training changed. :func:`spectrum_summary` gives the
numbers behind the figure: per head the trace of the covariance and the mean's norm (GMM), mean |S| (FastFood),
or the mean frequency norm (Generator), learned and initial.
"""

from __future__ import annotations

import torch

from kernelized.kernels.random_features import RandomFeatureMap

RADII = torch.linspace(0.0, 4.0, 41)


def learned_maps(model: torch.nn.Module) -> list[tuple[str, RandomFeatureMap]]:
    """``(module name, feature map)`` of every random-feature map with learned parameters, in model order."""
    out = []
    for name, module in model.named_modules():
        if isinstance(module, RandomFeatureMap) and any(True for _ in module.parameters(recurse=True)):
            out.append((name, module))
    return out


def kind(fm: RandomFeatureMap) -> str:
    if hasattr(fm, "num_components"):
        return "gmm"
    if hasattr(fm, "padded_dim"):
        return "fastfood"
    return "generator"


@torch.no_grad()
def second_moment(fm: RandomFeatureMap) -> torch.Tensor:
    """``[H, d, d]``: GMM ``sum_c pi_c (Sigma_c + mu_c mu_c')``; others: the mean ``w w'`` of generated rows."""
    if kind(fm) == "gmm":
        cov = _gmm_covariances(fm)
        mu = fm.mean
        pi = fm.mixture_weights()
        return (pi[..., None, None] * (cov + mu[..., :, None] * mu[..., None, :])).sum(1)
    omega = frequencies(fm)
    return omega.transpose(-1, -2) @ omega / omega.shape[-2]


def _gmm_covariances(fm) -> torch.Tensor:
    """``Sigma [H, C, d, d]`` of a GMM map (``L' L`` or ``diag(exp(ell))``)."""
    if fm.covariance == "full":
        return fm.sigma.transpose(-1, -2) @ fm.sigma
    return torch.diag_embed(torch.exp(fm.log_var))


def _fastfood_scales(fm) -> torch.Tensor:
    """FastFood's learned ``S`` as ``[H, D]`` (one shared ``[1, D]`` row under ``reference="kl"``)."""
    return fm.S.expand(fm.num_heads, -1)


@torch.no_grad()
def frequencies(fm: RandomFeatureMap, num: int = 512) -> torch.Tensor:
    """``[H, N, d]`` frequencies of the map's evaluation draw (Generator: ``num`` rows in evaluation mode)."""
    was = fm.training
    fm.eval()
    try:
        if kind(fm) == "generator":
            return fm.frequencies(fm.draw(torch.Generator().manual_seed(0), num=num))  # [H, num, d], shared
        return fm.frequencies(fm.current_noise())
    finally:
        fm.train(was)


def principal_directions(fm: RandomFeatureMap) -> torch.Tensor:
    """``[H, 2, d]``: the top two eigenvectors of each head's second moment (rows, largest first)."""
    moment = second_moment(fm)
    _, vecs = torch.linalg.eigh(moment.double())
    return vecs[..., [-1, -2]].transpose(-1, -2).to(moment.dtype)


@torch.no_grad()
def kernel_profile(fm: RandomFeatureMap, directions: torch.Tensor, radii: torch.Tensor = RADII) -> torch.Tensor:
    """``[H, K, R]``: ``kernel(q = r d^(1/4) u_k, k = 0)`` for unit directions ``directions [H, K, d]``."""
    scale = fm.head_dim**0.25 * radii.to(directions.dtype)
    q = directions[:, :, None, :] * scale[None, None, :, None]  # [H, K, R, d]
    q = q.permute(1, 2, 0, 3)  # [K, R, H, d]: heads at position -2, as maps expect
    return fm.kernel(q, torch.zeros_like(q)).permute(2, 0, 1)


def profile_directions(fm: RandomFeatureMap, seed: int = 0) -> torch.Tensor:
    """``[H, 3, d]``: each head's top principal direction, then two seeded random unit directions."""
    g = torch.Generator().manual_seed(seed)
    rand = torch.randn(2, fm.head_dim, generator=g)
    top = principal_directions(fm)[:, :1]
    rand = (rand / rand.norm(dim=-1, keepdim=True)).to(top.dtype).expand(fm.num_heads, -1, -1)
    return torch.cat([top, rand], dim=1)


@torch.no_grad()
def spectrum_summary(fm: RandomFeatureMap) -> list[dict]:
    """One row per head: the numbers that describe its learned spectrum (see the module docstring)."""
    family = kind(fm)
    freq_norms = frequencies(fm).norm(dim=-1).mean(-1)  # [H]
    if family == "gmm":
        traces = _gmm_covariances(fm).diagonal(dim1=-2, dim2=-1).sum(-1).mean(-1)  # [H]
        mean_norms = fm.mean.norm(dim=-1).mean(-1)
    elif family == "fastfood":
        mean_abs_S = _fastfood_scales(fm).abs().mean(-1)
    rows = []
    for h in range(fm.num_heads):
        row = {"head": h, "kind": family}
        if family == "gmm":
            row.update(trace_sigma=float(traces[h]), mean_norm=float(mean_norms[h]))
        elif family == "fastfood":
            row.update(mean_abs_S=float(mean_abs_S[h]))
        row["freq_norm"] = float(freq_norms[h])
        rows.append(row)
    return rows


def _ellipse(mean2: torch.Tensor, cov2: torch.Tensor, n: int = 60) -> torch.Tensor:
    """``[n, 2]`` points of the 1-sigma ellipse of a 2-D Gaussian."""
    t = torch.linspace(0, 2 * torch.pi, n)
    vals, vecs = torch.linalg.eigh(cov2.double())
    circle = torch.stack([t.cos(), t.sin()], -1).double() * vals.clamp_min(0).sqrt()
    return (circle @ vecs.T + mean2.double()).float()


def _draw_spectrum(ax, fm: RandomFeatureMap, h: int, basis: torch.Tensor, style: dict, points) -> None:
    """One head's spectrum on ``ax`` in the plane of ``basis [2, d]`` (FastFood: its sorted scales); ``points``:
    the map's GMM covariances ``[H, C, d, d]`` or generated frequencies ``[H, N, d]``, computed once per map."""
    if kind(fm) == "fastfood":
        S = _fastfood_scales(fm)[h].abs().sort(descending=True).values
        ax.plot(S.numpy(), marker="o", ms=2, **style)
        ax.set_xlabel("rank")
        ax.set_ylabel("|S| (learned scale)")
        return
    if kind(fm) == "gmm":
        cov = points[h]
        signs = (1, -1) if fm.estimator == "rks" else (1,)  # GMM-RKS draws the symmetric pair z +- mu
        for c in range(fm.num_components):
            for sign in signs:
                m2, c2 = sign * basis @ fm.mean[h, c], basis @ cov[c] @ basis.T
                pts = _ellipse(m2, c2)
                ax.plot(pts[:, 0], pts[:, 1], **style)
                ax.plot([m2[0]], [m2[1]], marker="x", color=style["color"])
    else:
        w = points[h] @ basis.T
        ax.scatter(w[:, 0], w[:, 1], s=3, alpha=0.4, color=style["color"], label=style.get("label"))
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_aspect("equal", adjustable="datalim")


@torch.no_grad()
def draw_spectra(path, name: str, fm: RandomFeatureMap, initial: RandomFeatureMap | None, max_heads: int = 4):
    """PNG: per head (rows, at most ``max_heads``) the spectrum and ``k(delta)`` along three directions; trained
    solid, initialisation dashed (grey)."""
    import matplotlib.pyplot as plt

    heads = min(fm.num_heads, max_heads)
    fig, axes = plt.subplots(heads, 2, figsize=(10, 3.6 * heads), squeeze=False)
    basis, dirs = principal_directions(fm), profile_directions(fm)
    maps = [(fm, {"color": "tab:blue", "ls": "-", "label": "trained"})]
    if initial is not None:
        maps.append((initial, {"color": "grey", "ls": "--", "label": "initial"}))
    labels = ["top PC", "random 1", "random 2"]
    per_map = []
    for m, style in maps:
        family = kind(m)
        points = _gmm_covariances(m) if family == "gmm" else frequencies(m, 256) if family == "generator" else None
        per_map.append((m, style, points, kernel_profile(m, dirs)))
    for h in range(heads):
        for m, style, points, profiles in per_map:
            _draw_spectrum(axes[h][0], m, h, basis[h], style, points)
            prof = profiles[h]
            for k, width in zip(range(prof.shape[0]), (2.0, 1.0, 1.0)):
                lab = f"{style['label']}, {labels[k]}" if h == 0 else None
                axes[h][1].plot(RADII, prof[k], lw=width, color=style["color"], ls=style["ls"], alpha=1 - 0.25 * k,
                                label=lab)  # fmt: skip
        axes[h][0].set_title(f"head {h}: spectrum ({kind(fm)})")
        axes[h][1].set_title(f"head {h}: k(delta) = kernel(q = delta, k = 0)")
        axes[h][1].set_xlabel("|delta| d^-1/4")
        axes[h][1].grid(True, alpha=0.3)
    axes[0][1].legend(fontsize=7)
    fig.suptitle(f"{name}: learned spectrum (solid) against its initialisation (dashed)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
