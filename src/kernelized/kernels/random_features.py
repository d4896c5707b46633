"""Random-feature machinery shared by every spectral kernel, and the plain Gaussian-kernel map ``rff``.

A random feature map estimates a kernel from frequencies omega drawn from a spectral distribution:

* RKS (random kitchen sinks, Rahimi & Recht): ``phi(x) = [a_m cos(w_m.x), a_m sin(w_m.x)]_m (+ [s])`` so that
  ``<phi(q), phi(k)> = sum_m a_m^2 cos(w_m.(q - k)) + s^2``, an unbiased estimate of the shift-invariant kernel
  ``E cos(w.(q-k))`` (plus s^2). The optional constant feature ``s`` (the KL code's "smoothing") keeps the
  normaliser of linear attention away from zero, since RKS features can be negative.
* PRF (positive random features, Performer): ``phi(x) = [a_m exp(w_m.x - c |x|^2)]_m``, or the hyperbolic pair
  ``[exp(+w.x - c|x|^2), exp(-w.x - c|x|^2)] a_m / sqrt(2)``;
  ``E <phi(q), phi(k)> = E exp(w.(q+k)) exp(-c(|q|^2+|k|^2))``.
  c = 1/2 gives the softmax kernel for w ~ N(0, I) (FAVOR+); c = 1 (the KL code) gives the Gaussian kernel.

Inputs are scaled by ``x~ = d**(-1/4) x`` first (both queries and keys), so that for the softmax kernel
``exp(q~.k~) = exp(q.k / sqrt(d))``. ``a_m^2`` are per-frequency weights summing to the kernel's scale (1/M for
i.i.d. draws).

**The draw policy.** :class:`RandomFeatureMap` holds two draws of the noise that frequencies are computed
from, as buffers (so checkpoints carry them): ``noise_*`` (the training draw) and ``eval_noise_*`` (a fixed draw
made from ``seed`` at construction). Frequencies are computed from the noise and the learned parameters inside
every forward (the reparameterisation trick), so gradients reach the distribution's parameters. Layers call
:meth:`RandomFeatureMap.on_forward` once per forward, before ``query``/``key``:

* ``redraw="step"``: every training-mode forward that does not continue a sequence draws anew;
  ``redraw=N``: every N-th such forward; ``redraw="fixed"``: never (only :meth:`resample` draws).
* ``eval_draw="fixed"`` (default): evaluation uses the seeded draw, so it is deterministic;
  ``"current"``: evaluation uses the current training draw; ``"stochastic"``: every evaluation forward draws anew.
* ``on_forward(continuing=True)`` never draws: a state carried between chunks or decode steps was built with the
  current draw and stays valid. Queries and keys always read the same draw.

**The PRF stabiliser** (``stabilize=True``) guards exp against overflow without changing normalised attention,
in every form (parallel, chunk, recurrent, decoding):

* queries: each token's features are divided by their own largest value (detached). A query's own scale cancels
  between the numerator and the normaliser of ``o_t = phi(q_t)' S_t / phi(q_t)' z_t``, in every form.
* keys: features are multiplied by ``exp(-b_h)``, a per-head constant of the draw alone (detached), never of the
  tokens: ``b_h = max(0, max_m [|w_hm|^2 / (4c) + log a_hm] - 60)``. Since ``w.x - c|x|^2 <= |w|^2 / (4c)`` for
  every x, key features never exceed ``e^60`` whatever the input, so sums over up to ~1e11 keys stay finite in
  float32; for ordinary draws b_h = 0 and keys are untouched (nothing underflows that did not before). A per-
  sequence max over keys (fast-transformers' ``stabilize``) would use future keys and break chunked and
  recurrent forms; b_h cannot, because the draw is fixed within a sequence.
Both scales cancel exactly at eps = 0; with the op's eps > 0 they change the result only through eps. Turn
the stabiliser off for unnormalised attention or to read the raw kernel estimate. The limit: b_h is a worst case
over all inputs, so for a very wide learned spectrum (b_h >> 0) with small actual keys, key features can
underflow in float32 and eps then dominates the normaliser; the outputs stay finite (never inf/NaN), but such a
spectrum is beyond what float32 features can represent without a data-dependent rescaling of the state.
"""

from __future__ import annotations

import itertools
import math

import torch

from kernelized import cpu as _cpu
from kernelized._checks import check_choice, check_positive_int
from kernelized.kernels.base import FeatureMap
from kernelized.kernels.feature_ops import ESTIMATORS, head_matmul
from kernelized.kernels.registry import register

#: log of the largest key feature the PRF stabiliser allows (see the module docstring).
KEY_LOG_BOUND = 60.0
SEED_SALT = 0x5EED


def pow2cast(x: float) -> int:
    """Round x >= 1 to a power of two as the KL code does: look at the bit after the leading bit of int(x).

    If it is 1 round up, else down: 266.2 -> 256, 110.9 -> 128; exact powers of two stay.
    """
    n = max(int(x), 1)
    lead = n.bit_length() - 1
    next_bit = (n >> (lead - 1)) & 1 if lead >= 1 else 0
    return 1 << (lead + next_bit)


def default_num_features(head_dim: int) -> int:
    """``pow2cast(d ln d)``: 256 for d = 64, 128 for d = 32, 32 for d = 16 (the KL code's and lucidrains' M)."""
    return pow2cast(head_dim * math.log(head_dim)) if head_dim > 1 else 1


def next_power_of_two(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def chi_norms(shape: tuple[int, ...], dim: int, generator: torch.Generator | None = None, **kw) -> torch.Tensor:
    """Samples of the chi distribution with ``dim`` degrees of freedom (norms of N(0, I_dim) vectors), ``shape``."""
    return torch.randn(*shape, dim, generator=generator, **kw).norm(dim=-1)


def orthogonal_gaussian(batch: int, num: int, dim: int, generator: torch.Generator | None = None, **kw) -> torch.Tensor:
    """Orthogonal random features ``[batch, num, dim]`` (Choromanski et al.): rows within each block of ``dim`` are
    orthogonal, with chi_dim norms, so every row is marginally N(0, I_dim) and estimates stay unbiased."""
    blocks = -(-num // dim)
    g = torch.randn(batch, blocks, dim, dim, generator=generator, **kw)
    q, _ = torch.linalg.qr(g.double())  # columns orthonormal
    rows = q.transpose(-1, -2).to(g.dtype).reshape(batch, blocks * dim, dim)[:, :num]
    return rows * chi_norms((batch, num), dim, generator, **kw).unsqueeze(-1)


def gaussian_noise(
    batch: int, num: int, dim: int, orthogonal: bool, generator: torch.Generator | None = None, **kw
) -> torch.Tensor:
    """Standard normal noise ``[batch, num, dim]``, i.i.d. or orthogonal (see :func:`orthogonal_gaussian`)."""
    if orthogonal:
        return orthogonal_gaussian(batch, num, dim, generator, **kw)
    return torch.randn(batch, num, dim, generator=generator, **kw)


def hadamard_transform(x: torch.Tensor) -> torch.Tensor:
    """Unnormalised Walsh-Hadamard transform (Sylvester order) along the last axis, a power of two: ``H x``."""
    n = x.shape[-1]
    if n & (n - 1):
        raise ValueError(f"hadamard_transform needs a power-of-two last axis, got {n}")
    lead, h, y = x.shape[:-1], 1, x
    while h < n:  # combine entries i and i + h inside blocks of 2h
        y = y.reshape(*lead, n // (2 * h), 2, h)
        y = torch.stack((y[..., 0, :] + y[..., 1, :], y[..., 0, :] - y[..., 1, :]), dim=-2)
        h *= 2
    return y.reshape(x.shape)


def _check_redraw(redraw) -> str | int:
    if redraw in ("step", "fixed"):
        return redraw
    if isinstance(redraw, int) and not isinstance(redraw, bool) and redraw >= 1:
        return redraw
    raise ValueError(f"redraw must be 'step', 'fixed' or an integer >= 1 (redraw every N steps), got {redraw!r}")


def check_num_features(value, default: int) -> int:
    return default if value is None else check_positive_int("num_features", value)


class RandomFeatureMap(FeatureMap):
    """Base class of random feature maps: the draw policy, the input scaling and the RKS / PRF estimators.

    Subclasses define :meth:`draw` (noise tensors from a generator), :meth:`frequencies` (omega ``[H, M, d]``
    from the noise and the learned parameters) and :meth:`kernel`; they may override :meth:`weights` (the
    per-frequency ``a_m^2``, default 1/M) and :meth:`project` (``x~ . omega``, e.g. FastFood's fast transform,
    which builds its frequencies). Features always project with the dense ``[H, M, d]`` frequencies, computed once
    per call (:meth:`query_key`, :meth:`spectrum`): at attention's head sizes (d <= 128) one small gemm per token
    costs less than a fast transform's log2(d) elementwise passes over ``[..., H, M]``.
    Subclasses call :meth:`_init_draws` at the end of ``__init__``.

    Args:
        estimator: ``"rks"`` or ``"prf"``.
        redraw: ``"step"``, ``"fixed"`` or N (see the module docstring).
        eval_draw: ``"fixed"``, ``"current"`` or ``"stochastic"``.
        seed: seeds the fixed evaluation draw and the initial training draw.
        scale: input scale; default ``d**(-1/4)``.
        smoothing: RKS only, the constant feature s (None: none).
        hyperbolic, norm_offset, stabilize: PRF only: the +- pair, the c of ``exp(w.x - c|x|^2)``, the stabiliser.
    """

    is_random = True
    per_head = True
    #: every noise tensor of :meth:`draw` starts with the head axis (False: one draw serves all heads already)
    noise_has_head_axis = True
    #: one draw repeated for every head (set by :meth:`share_draw_across_heads`)
    shared_draw = False

    def __init__(
        self,
        head_dim: int,
        num_heads: int,
        *,
        estimator: str,
        redraw: str | int = "step",
        eval_draw: str = "fixed",
        seed: int = 0,
        scale: float | None = None,
        smoothing: float | None = 1.0,
        hyperbolic: bool = False,
        norm_offset: float = 1.0,
        stabilize: bool = True,
    ):
        super().__init__(head_dim, num_heads)
        check_choice("estimator", estimator, ["rks", "prf"])
        check_choice("eval_draw", eval_draw, ["fixed", "current", "stochastic"])
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        if scale is not None and not (isinstance(scale, (int, float)) and scale > 0):
            raise ValueError(f"scale must be a positive number or None (d**-0.25), got {scale!r}")
        if smoothing is not None and not isinstance(smoothing, (int, float)):
            raise ValueError(f"smoothing must be a number or None, got {smoothing!r}")
        if not (isinstance(norm_offset, (int, float)) and norm_offset >= 0):
            raise ValueError(f"norm_offset must be a number >= 0, got {norm_offset!r}")
        if estimator == "prf" and stabilize and norm_offset == 0:
            raise ValueError("stabilize=True needs norm_offset > 0 (the key bound is |w|^2 / (4 norm_offset))")
        self.estimator = estimator
        self.redraw = _check_redraw(redraw)
        self.eval_draw = eval_draw
        self.seed = seed
        self.input_scale = head_dim**-0.25 if scale is None else float(scale)
        self.smoothing = None if (estimator == "prf" or smoothing is None) else float(smoothing)
        self.hyperbolic = bool(hyperbolic) and estimator == "prf"
        self.norm_offset = float(norm_offset)
        self.stabilize = bool(stabilize) and estimator == "prf"
        self.num_forwards = 0  # training forwards seen, for redraw=N (saved through get_extra_state)
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # device and dtype of new draws
        self._noise_names: list[str] = []

    # -- what subclasses define ---------------------------------------------------------------
    @property
    def num_frequencies(self) -> int:
        """Number of frequencies per head (the M of ``u [..., H, M]``)."""
        raise NotImplementedError

    def draw(self, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """New noise tensors (any shapes) on the map's device; queries and keys will share them."""
        raise NotImplementedError

    def frequencies(self, noise: dict[str, torch.Tensor]) -> torch.Tensor:
        """omega ``[H, M, d]`` from the noise and the learned parameters (differentiable in the parameters)."""
        raise NotImplementedError

    def weights(self, noise: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-frequency weights ``a_m^2``, ``[H, M]``; i.i.d. draws: 1/M."""
        return self._anchor.new_full((self.num_heads, self.num_frequencies), 1.0 / self.num_frequencies)

    def project(self, x: torch.Tensor, noise: dict[str, torch.Tensor]) -> torch.Tensor:
        """``u = x . omega``: ``x [..., H, d]`` (already scaled) -> ``[..., H, M]``."""
        return head_matmul(x, self.frequencies(noise))

    # -- draws --------------------------------------------------------------------------------
    def _randn(self, *shape: int, generator: torch.Generator | None) -> torch.Tensor:
        a = self._anchor
        dev = a.device if generator is None else generator.device
        return torch.randn(*shape, generator=generator, device=dev, dtype=a.dtype).to(a.device)

    def _rand(self, *shape: int, generator: torch.Generator | None) -> torch.Tensor:
        a = self._anchor
        dev = a.device if generator is None else generator.device
        return torch.rand(*shape, generator=generator, device=dev, dtype=a.dtype).to(a.device)

    def seeded_generator(self, offset: int = 0) -> torch.Generator:
        """A CPU generator for the map's fixed draws; salted so that ``torch.manual_seed(seed)`` elsewhere does
        not reproduce the fixed draw as the first training draw."""
        return torch.Generator().manual_seed(SEED_SALT + 7919 * self.seed + offset)

    def _draw_for_heads(self, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """:meth:`draw`, with head 0's noise repeated for every head after :meth:`share_draw_across_heads`."""
        noise = self.draw(generator)
        if self.shared_draw and self.noise_has_head_axis:
            noise = {n: t[:1].expand_as(t).clone() for n, t in noise.items()}
        return noise

    def share_draw_across_heads(self) -> None:
        """One draw for all heads from now on (the KL code's single noise buffer per layer; see
        :mod:`kernelized.kernels.reference_kl`): both draws are made again, every head repeating head 0's."""
        self.shared_draw = True
        for name, t in self._draw_for_heads(self.seeded_generator()).items():
            setattr(self, f"noise_{name}", t)
            setattr(self, f"eval_noise_{name}", t.clone())

    def _init_draws(self) -> None:
        noise = self._draw_for_heads(self.seeded_generator())
        for name, t in noise.items():
            self.register_buffer(f"noise_{name}", t)
            self.register_buffer(f"eval_noise_{name}", t.clone())
        self._noise_names = list(noise)

    def resample(self, generator: torch.Generator | None = None) -> None:
        """Draw the training noise anew (from ``generator``, else the global RNG); the fixed eval draw stays."""
        with torch.no_grad():
            for name, t in self._draw_for_heads(generator).items():
                setattr(self, f"noise_{name}", t)

    def on_forward(self, continuing: bool = False) -> None:
        """Apply the draw policy; layers call this once per forward before ``query``/``key``."""
        if continuing:
            return
        if self.training:
            n, r = self.num_forwards, self.redraw
            if r == "step" or (isinstance(r, int) and n > 0 and n % r == 0):
                self.resample()
            self.num_forwards += 1
        elif self.eval_draw == "stochastic":
            self.resample()

    def current_noise(self) -> dict[str, torch.Tensor]:
        """The draw that ``query``/``key`` use now: the fixed eval draw in eval mode (``eval_draw="fixed"``)."""
        prefix = "eval_noise_" if (not self.training and self.eval_draw == "fixed") else "noise_"
        return {n: getattr(self, prefix + n) for n in self._noise_names}

    def get_extra_state(self) -> dict:
        return {"num_forwards": self.num_forwards}

    def set_extra_state(self, state: dict) -> None:
        self.num_forwards = int(state.get("num_forwards", 0))

    # -- features -----------------------------------------------------------------------------
    @property
    def feature_dim(self) -> int:
        m = self.num_frequencies
        if self.estimator == "rks":
            return 2 * m + (self.smoothing is not None)
        return 2 * m if self.hyperbolic else m

    def features(self, x: torch.Tensor, role: str, noise: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``[..., H, d] -> [..., H, F]`` in x's dtype; computed in float32 at least (and outside autocast), because
        cos/sin/exp of half-precision arguments lose the absolute precision the estimate needs."""
        with torch.autocast(x.device.type, enabled=False):  # frequencies from matmuls too: never in half precision
            omega, weight = self.spectrum(self.current_noise() if noise is None else noise)
        return self._features(x, role, omega, weight)

    def query_key(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both roles' features from one computation of the current draw's frequencies and weights."""
        with torch.autocast(q.device.type, enabled=False):
            omega, weight = self.spectrum(self.current_noise())
        q, k = self.check_input(q, "q"), self.check_input(k, "k")
        return self._features(q, "query", omega, weight), self._features(k, "key", omega, weight)

    def spectrum(self, noise: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The frequencies ``[H, M, d]`` and weights ``[H, M]`` of a draw. In evaluation mode without autograd they
        are computed once per set of parameters, buffers and draw, and reused until one of them changes (an
        optimiser step, ``load_state_dict``, a new draw, a move to another device or dtype)."""
        if self.training or (torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters())):
            return self.frequencies(noise), self.weights(noise)
        state = itertools.chain(noise.values(), self.parameters(), self.buffers())
        key = tuple((t.data_ptr(), t._version, t.dtype) for t in state)
        cached = self.__dict__.get("_spectrum_cache")
        if cached is None or cached[0] != key:
            with torch.no_grad():
                self.__dict__["_spectrum_cache"] = cached = (key, self.frequencies(noise), self.weights(noise))
        return cached[1], cached[2]

    def _features(self, x: torch.Tensor, role: str, omega: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        with torch.autocast(x.device.type, enabled=False):
            x = x.float() if dtype in (torch.float16, torch.bfloat16) else x
            args = self._operands(x, role, omega, weight)
            return ESTIMATORS[self.estimator](*args).to(dtype)

    def _operands(self, x: torch.Tensor, role: str, omega: torch.Tensor, weight: torch.Tensor) -> tuple:
        """The arguments of :func:`~kernelized.kernels.feature_ops.rks` (``x, w, a, smoothing``) or ``prf``
        (``x, w, log a, c, hyperbolic, key shift, query max``) that give one role's features."""
        w = omega.to(x.dtype) * self.input_scale  # (s x) . w = x . (s w): scale the small operand
        if self.estimator == "rks":
            return x, w, weight.sqrt(), self.smoothing
        shift = self._key_shift(omega, weight) if self.stabilize and role != "query" else None
        log_amp = 0.5 * torch.log(weight) - (0.5 * math.log(2.0) if self.hyperbolic else 0.0)
        offset = self.norm_offset * self.input_scale**2
        return x, w, log_amp, offset, self.hyperbolic, shift, self.stabilize and role == "query"

    def query_key_operands(self, q: torch.Tensor, k: torch.Tensor) -> tuple[str, tuple, tuple] | None:
        """``(estimator, query operands, key operands)`` of :meth:`_operands` from one spectrum, for an op that forms
        the features itself (the layer's fused bidirectional path), or None where the compiled feature kernels do
        not take these inputs (half precision, autocast, CUDA, the kernels disabled)."""
        # decided before the spectrum is computed: computing it twice in a call (here, then in query_key) would
        # also move a generator's BatchNorm statistics twice
        if torch.is_autocast_enabled() or q.shape[-2] != self.num_heads or not _cpu.usable(q, k):
            return None
        q, k = self.check_input(q, "q"), self.check_input(k, "k")
        omega, weight = self.spectrum(self.current_noise())
        return self.estimator, self._operands(q, "query", omega, weight), self._operands(k, "key", omega, weight)

    @torch.no_grad()
    def key_shift(self, noise: dict[str, torch.Tensor]) -> torch.Tensor:
        """The stabiliser's per-head key constant ``b_h`` ``[H]`` (see the module docstring)."""
        return self._key_shift(*self.spectrum(noise))

    @torch.no_grad()
    def _key_shift(self, omega: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        bound = (omega * omega).sum(-1) / (4 * self.norm_offset) + 0.5 * torch.log(weight.to(omega.dtype))
        return (bound.amax(-1) - KEY_LOG_BOUND).clamp_min(0.0)

    def estimate(self, q: torch.Tensor, k: torch.Tensor, noise: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The raw estimate ``<phi(q), phi(k)>`` of one draw (no stabiliser): ``[..., H, d] x2 -> [..., H]``."""
        stab, self.stabilize = self.stabilize, False
        try:
            return (
                self.features(self.check_input(q, "q"), "query", noise)
                * self.features(self.check_input(k, "k"), "key", noise)
            ).sum(-1)
        finally:
            self.stabilize = stab

    def expected_given(
        self, q: torch.Tensor, k: torch.Tensor, omega: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        """The estimator's expectation when frequencies follow the empirical law of ``omega [H, N, d]`` with
        weights ``weight [H, N]`` (the "large-sample" kernel of maps without a closed form)."""
        q, k = q * self.input_scale, k * self.input_scale
        if self.estimator == "rks":
            diff = head_matmul(q - k, omega)
            out = (weight.to(q.dtype) * torch.cos(diff)).sum(-1)
            return out + (self.smoothing**2 if self.smoothing is not None else 0.0)
        s = head_matmul(q + k, omega)
        e = torch.cosh(s) if self.hyperbolic else torch.exp(s)
        base = -self.norm_offset * ((q * q).sum(-1) + (k * k).sum(-1))
        return (weight.to(q.dtype) * e).sum(-1) * torch.exp(base)

    # -- the estimator's error in closed form ------------------------------------------------
    def gaussian_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """For frequencies drawn i.i.d. within components c of Gaussian laws ``N(mu_c, Sigma_c)``:
        ``(pi_c^2 / n_c [H, C], mu_c . x [..., H, C], x' Sigma_c x [..., H, C])`` for scaled ``x [..., H, d]``,
        where ``n_c`` frequencies (or noise rows) of weight ``pi_c / n_c`` each come from component c. None when
        the frequencies' law has no such form (learned transforms, generators, orthogonal rows)."""
        return None

    def no_closed_form_reason(self) -> str:
        """Why :meth:`gaussian_moments` is None (named in :meth:`estimator_mse`'s error)."""
        return "its frequencies are not i.i.d. draws of a Gaussian (mixture) law"

    @property
    def has_estimator_mse(self) -> bool:
        return self.gaussian_moments(self._anchor.new_zeros(1, self.num_heads, self.head_dim)) is not None

    #: GMM-RKS draws each noise row as the pair ``z +- mu`` (the KL code's symmetric pair): the two share z.
    paired_rows = False

    def estimator_mse(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Closed-form MSE of one draw's raw estimate :meth:`estimate` against :meth:`kernel`: ``[..., H, d]``
        twice -> ``[..., H]``. The estimate is unbiased, so this is its variance, ``sum_c pi_c^2 / n_c Var_c``
        with one frequency's (or one noise row's) variance in component c, for ``d = q~ - k~``, ``t = q~ + k~``,
        ``a = d' Sigma_c d`` or ``t' Sigma_c t`` and ``m = mu_c . d`` or ``mu_c . t``:

        * RKS, ``cos(w.d)``: ``(1 + cos(2m) e^{-2a}) / 2 - cos(m)^2 e^{-a}``, i.e. ``(1 + k(2d)) / 2 - k(d)^2``;
          the symmetric pair ``cos((z + mu).d) + cos((z - mu).d) = 2 cos(m) cos(z.d)`` per noise row:
          ``4 cos(m)^2 (1 - e^{-a})^2 / 2``;
        * PRF, ``exp(w.t)``: ``E e^{2 w.t} - (E e^{w.t})^2 = e^{2m + a} (e^{a} - 1)``; the hyperbolic pair,
          ``cosh(w.t)``: ``(1 + e^{2a} cosh(2m)) / 2 - e^{a} cosh(m)^2``; both times ``e^{-2c(|q~|^2 + |k~|^2)}``.

        It grows with the covariance's eigenvalues along ``d`` (RKS: to the bound ``(1 + k(2d))/2``) or along ``t``
        (PRF: without bound, as ``e^{2 t' Sigma t}``), and falls as 1/M. Raises for maps without a closed form."""
        q, k = self._scaled_pair(q, k)
        x = q - k if self.estimator == "rks" else q + k
        moments = self.gaussian_moments(x)
        if moments is None:
            raise NotImplementedError(
                f"estimator_mse: {type(self).__name__} has no closed form ({self.no_closed_form_reason()}); measure "
                "its error by Monte Carlo (kernelized.eval.kernel_error, `kernelized kernel-error`)"
            )
        weight, m, a = moments
        if self.estimator == "rks" and self.paired_rows:
            var = 2 * torch.cos(m) ** 2 * (-torch.expm1(-a)) ** 2
        elif self.estimator == "rks":
            var = 0.5 * (1 + torch.cos(2 * m) * torch.exp(-2 * a)) - torch.cos(m) ** 2 * torch.exp(-a)
        elif self.hyperbolic:
            var = 0.5 * (1 + torch.exp(2 * a) * torch.cosh(2 * m)) - torch.exp(a) * torch.cosh(m) ** 2
        else:
            var = torch.exp(2 * m + a) * torch.expm1(a)
        out = (weight.to(var.dtype) * var).sum(-1)
        if self.estimator == "prf":
            out = out * torch.exp(-2 * self.norm_offset * ((q * q).sum(-1) + (k * k).sum(-1)))
        return out

    def _scaled_pair(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_input(q, "q")
        self.check_input(k, "k")
        return q * self.input_scale, k * self.input_scale

    def extra_repr(self) -> str:
        extra = f", estimator={self.estimator!r}, redraw={self.redraw!r}, eval_draw={self.eval_draw!r}"
        if self.estimator == "rks":
            extra += f", smoothing={self.smoothing}"
        else:
            extra += f", hyperbolic={self.hyperbolic}, norm_offset={self.norm_offset}, stabilize={self.stabilize}"
        return super().extra_repr() + extra


def gaussian_prf_kernel(q: torch.Tensor, k: torch.Tensor, offset: float) -> torch.Tensor:
    """``E_{w ~ N(0, I)} exp(w.(q+k)) exp(-c(|q|^2 + |k|^2)) = exp(|q+k|^2 / 2 - c(|q|^2 + |k|^2))`` (scaled inputs).

    c = 1/2: ``exp(q.k)`` (softmax kernel); c = 1: ``exp(-|q-k|^2 / 2)`` (Gaussian kernel). The hyperbolic pair
    has the same expectation, since -w has the same law as w.
    """
    t = q + k
    return torch.exp(0.5 * (t * t).sum(-1) - offset * ((q * q).sum(-1) + (k * k).sum(-1)))


class StandardGaussianFeatureMap(RandomFeatureMap):
    """Frequencies ``w ~ N(0, I)`` per head (orthogonal rows optional): the fixed kernels rff and performer.

    Subclasses set ``self.m`` (frequencies per head) and ``self.orthogonal`` before ``_init_draws()``.
    """

    @property
    def num_frequencies(self) -> int:
        return self.m

    def draw(self, generator):
        a = self._anchor
        dev = a.device if generator is None else generator.device
        eps = gaussian_noise(self.num_heads, self.m, self.head_dim, self.orthogonal, generator, device=dev)
        return {"eps": eps.to(device=a.device, dtype=a.dtype)}

    def frequencies(self, noise):
        return noise["eps"]

    def gaussian_moments(self, x):
        if self.orthogonal:
            return None
        weight = x.new_full((self.num_heads, 1), 1.0 / self.m)
        return weight, torch.zeros_like(x[..., :1]), (x * x).sum(-1, keepdim=True)

    def no_closed_form_reason(self) -> str:
        if self.orthogonal:
            return "orthogonal rows are not independent; build it with orthogonal=False for the closed form"
        return super().no_closed_form_reason()


@register("rff")
class RandomFourierFeatures(StandardGaussianFeatureMap):
    """Random Fourier features (RKS) of the Gaussian kernel: ``kernel(q, k) = exp(-|q~ - k~|^2 / 2) + s^2``.

    The KL code's ``rbf-fourier``: M = pow2cast(d ln d) frequencies w ~ N(0, I) per head (independent draws per
    head), ``2M + 1`` features with the smoothing constant s = 1. Inputs scaled by ``d**(-1/4)``.

    Args:
        num_features: M frequencies (default pow2cast(d ln d)); features are 2M (+1 with smoothing).
        orthogonal: orthogonal random features instead of i.i.d. rows.
        smoothing: the constant feature s (None: no constant feature).
        redraw, eval_draw, seed, scale: the draw policy and input scale (see :class:`RandomFeatureMap`).
    """

    def __init__(
        self,
        head_dim: int,
        num_heads: int = 1,
        num_features: int | None = None,
        orthogonal: bool = False,
        smoothing: float | None = 1.0,
        redraw: str | int = "step",
        eval_draw: str = "fixed",
        seed: int = 0,
        scale: float | None = None,
    ):
        super().__init__(
            head_dim, num_heads, estimator="rks", redraw=redraw, eval_draw=eval_draw, seed=seed, scale=scale,
            smoothing=smoothing,
        )  # fmt: skip
        self.m = check_num_features(num_features, default_num_features(head_dim))
        self.orthogonal = bool(orthogonal)
        self._init_draws()

    def kernel(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        q, k = self._scaled_pair(q, k)
        diff = q - k
        s2 = self.smoothing**2 if self.smoothing is not None else 0.0
        return torch.exp(-0.5 * (diff * diff).sum(-1)) + s2
