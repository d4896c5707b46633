"""Compiled CPU kernels: plain C++ (``*.cpp`` beside this file, no torch headers) built on first use with the
system's C++ compiler (about 7 s on this 2-core VM, the sources compiled in parallel: docs/bench/build_time.txt)
and called through ctypes. Used below the ops and the feature maps:

- ``chunk.cpp``: causal chunked linear attention, forward and backward (``ops.linear_attention(mode="chunk")``);
- ``bidirectional.cpp``: non-causal linear attention, forward and backward (``causal=False``, ``mode="chunk"``);
- ``polynomial.cpp``: implicit ``sum_p c_p (q.k)^p`` attention, flash style, forward and backward
  (``ops.polynomial_attention``);
- ``features.cpp``: degree-2 monomial features, forward and backward (ReBased, Based: ``kernels.polynomial``);
- ``random_features.cpp``: RKS and PRF random features from the inputs and frequencies, the projection and the
  cos/sin or exp fused a tile of rows at a time, forward and backward (``kernels.feature_ops``; the backward in
  ``random_features.h``, which ``bidirectional.cpp`` also runs inside its fused backward, ``layers.fused``);
- ``tiles.h``: float32 AVX-512 register tiles for the bidirectional op's skinny products.

BLAS is torch's own: the Fortran ``sgemm_``/``dgemm_`` that torch's CPU library exports (its bundled MKL), passed
to the kernels as function pointers. OpenMP is torch's own too: the library is built with ``-fopenmp`` and its
``libgomp.so.1`` is the one torch has loaded, so every op's kernel spreads its (batch, head) sequences or row
ranges over torch's thread team in one call. Where Python worker threads ran them instead (:func:`run_parallel`,
still used by the chunk op's PyTorch path), torch's idle OpenMP threads spun on the cores
those threads needed: the bidirectional op took 1.1-1.9x as long at the LRA shapes
(docs/bench/forms/bidirectional_openmp.txt). ctypes releases the GIL during a call.

Where there is no compiler, the build fails, or torch's library exports no BLAS, ``library()`` returns None (with
one warning) and callers take their PyTorch path. ``KERNELIZED_DISABLE_CPU_KERNELS=1`` forces that path.
Built libraries are cached under ``$KERNELIZED_CACHE`` (default ``~/.cache/kernelized``), keyed by the source,
the compiler flags and the CPU, and written atomically.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import torch

SOURCES = ("chunk.cpp", "bidirectional.cpp", "polynomial.cpp", "features.cpp", "random_features.cpp")
HEADERS = ("gemm.h", "vmath.h", "tiles.h", "random_features.h")  # included by the sources: part of the cache key
# -fopenmp: the kernels' parallel loops (gemm.h's parallel_items, features.cpp's rows) run on torch's own OpenMP
# team, since the library's libgomp.so.1 is the one torch has loaded. A compiler without OpenMP builds the same code
# with its parallel loops serial.
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17")
SERIAL_FLAGS = tuple("-fopenmp-simd" if flag == "-fopenmp" else flag for flag in FLAGS)
DTYPES = {torch.float32: "f32", torch.float64: "f64"}


def disabled() -> bool:
    return os.environ.get("KERNELIZED_DISABLE_CPU_KERNELS", "") not in ("", "0")


@contextlib.contextmanager
def pytorch_path():
    """Within this block, ops take their PyTorch path even where the compiled kernels exist (for A/B timings)."""
    before = os.environ.get("KERNELIZED_DISABLE_CPU_KERNELS")
    os.environ["KERNELIZED_DISABLE_CPU_KERNELS"] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ["KERNELIZED_DISABLE_CPU_KERNELS"]
        else:
            os.environ["KERNELIZED_DISABLE_CPU_KERNELS"] = before


def _cpu_id() -> str:
    """What ``-march=native`` depends on: the CPU's model and flags (a cached build must not move to another CPU)."""
    try:
        with open("/proc/cpuinfo") as f:
            return "".join(sorted({line for line in f if line.startswith(("model name", "flags"))}))
    except OSError:
        return platform.processor()


def _build(compiler: str) -> Path:
    """The library built with :data:`FLAGS`, else (the compiler has no OpenMP) with :data:`SERIAL_FLAGS`."""
    try:
        return _build_with(compiler, FLAGS)
    except RuntimeError:
        return _build_with(compiler, SERIAL_FLAGS)


def _build_with(compiler: str, flags: tuple[str, ...]) -> Path:
    """Compile the sources into a shared library in the cache (reused when source, flags and CPU match)."""
    here = Path(__file__).parent
    paths = [here / name for name in SOURCES]
    key = hashlib.sha256()
    for part in (
        *[(here / name).read_bytes() for name in (*SOURCES, *HEADERS)],
        " ".join(flags).encode(),
        compiler.encode(),
        _cpu_id().encode(),
    ):
        key.update(part)
    cache = Path(os.environ.get("KERNELIZED_CACHE", Path.home() / ".cache" / "kernelized")) / "cpu"
    target = cache / f"kernels-{key.hexdigest()[:16]}.so"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache)
    os.close(fd)
    try:
        with tempfile.TemporaryDirectory(dir=cache) as objects:
            _compile_and_link(compiler, flags, paths, Path(objects), tmp)
        os.replace(tmp, target)  # atomic: a concurrent build of the same key writes the same file
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


def _compile_and_link(compiler: str, flags: tuple[str, ...], paths: list[Path], objects: Path, out: str) -> None:
    """Each source compiled to an object file by its own compiler process, all at once (the sources take 0.3-5 s
    each: in parallel the build takes about half the time on 2 cores), then one link into ``out``."""
    compile_flags = [f for f in flags if f != "-shared"]
    objs = [objects / f"{p.stem}.o" for p in paths]
    procs = [subprocess.Popen([compiler, *compile_flags, "-c", str(p), "-o", str(o)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for p, o in zip(paths, objs)]  # fmt: skip
    errors = [proc.communicate()[1] for proc in procs]
    failed = [err for proc, err in zip(procs, errors) if proc.returncode != 0]
    if not failed:
        link = subprocess.run([compiler, *flags, *map(str, objs), "-o", out], capture_output=True, text=True)
        failed = [link.stderr] if link.returncode != 0 else []
    if failed:
        raise RuntimeError(f"{compiler} failed:\n{failed[0][-2000:]}")


def _torch_blas() -> dict[str, int]:
    """Addresses of ``sgemm_`` and ``dgemm_`` in torch's CPU library (KeyError/OSError if it has none)."""
    lib = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
    return {
        "f32": ctypes.cast(lib.sgemm_, ctypes.c_void_p).value,
        "f64": ctypes.cast(lib.dgemm_, ctypes.c_void_p).value,
    }


_P, _L, _I, _D = ctypes.c_void_p, ctypes.c_long, ctypes.c_int, ctypes.c_double
_HEADS = [_P, _L, _L, _L]
_ROWS = [_P, _L, _L]  # a [N, H, X] tensor of unit-stride rows: pointer, head stride, row stride
_BLOCKS = [_P, _L, _L]  # per-sequence blocks of a [B, H, ...] or [H, B, ...] array: pointer, batch, head strides
_SIGNATURES = {  # see the .cpp sources; the ops' calls are batched over (batch, head) pairs, strided [B, T, H, X]
    # tensors as _HEADS (pointer, batch, head and row strides), per-sequence blocks as _BLOCKS
    "chunk_forward": [_P, *_HEADS * 3, *_BLOCKS, *_HEADS, *_BLOCKS * 4, _L, _L, _L, _I, _I, _I, _I, _D],
    "chunk_backward": [_P, *_HEADS * 5, *_BLOCKS * 4, *_HEADS * 3, *_BLOCKS, _L, _L, _L, _I, _I, _I, _I],
    "bidirectional_forward": [_P, *_HEADS * 3, _P, _P, *_HEADS, _P, _P, _L, _L, _L, _I, _I, _I, _D, _I],
    "bidirectional_backward": [_P, *_HEADS * 3, _P, *_HEADS * 2, _P, _P, _P, *_HEADS * 3, _P, _L, _L, _L, _I, _I,
                               _I, _I],
    "bidirectional_features_backward": [_P, *_HEADS * 3, _P, *_HEADS * 2, _P, _P, *_HEADS * 2, _P, _I, _I, _I, _D,
                                        _I, *_HEADS * 3, _P, _P, _L, _L, _L, _I, _I, _I, _I],
    "polynomial_forward": [_P, *_HEADS * 3, _P, *_HEADS, _P, _L, _L, _L, _I, _I, _I, _P, _D, _I, _D],
    "polynomial_backward": [_P, *_HEADS * 3, _P, *_HEADS * 2, _P, *_HEADS * 3, _L, _L, _L, _I, _I, _I, _P, _D, _I],
    "monomials2_forward": [_P, _L, _I, _P, _P, _L],
    "monomials2_backward": [_P, _P, _L, _L, _I, _P, _P],
    # every head, strided tensors as (pointer, head stride, row stride): gemm, x, N, d, W [H, M, d], M, ..., H, chunks
    "rks_forward": [_P, *_ROWS, _L, _I, _P, _I, _P, _I, _D, *_ROWS, _I, _I],
    "rks_backward": [_P, *_ROWS, _L, _I, _P, _I, *_ROWS * 2, *_ROWS, _P, _P, _I, _I],
    "prf_forward": [_P, *_ROWS, _L, _I, _P, _I, _P, _D, _I, _I, _P, *_ROWS, _I, _I],
    "prf_backward": [_P, *_ROWS, _L, _I, _P, _I, *_ROWS * 2, _D, _I, *_ROWS, _P, _P, _I, _I],
}  # fmt: skip


@functools.lru_cache(maxsize=1)
def library() -> SimpleNamespace | None:
    """The loaded kernels (``.chunk_forward[dtype]``, ``.monomials2_forward[dtype]``, ... and ``.gemm[dtype]``,
    dtype "f32" or "f64"; ``.tiles``, whether the build has tiles.h's float32 AVX-512 tiles), or None where they
    cannot be had."""
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    try:
        if compiler is None:
            raise RuntimeError("no C++ compiler found (set CXX)")
        gemm = _torch_blas()
        lib = ctypes.CDLL(str(_build(compiler)))
    except (OSError, RuntimeError, AttributeError, subprocess.SubprocessError) as err:
        warnings.warn(f"kernelized: compiled CPU kernels unavailable, using the PyTorch path ({err})", stacklevel=2)
        return None
    lib.bidirectional_tiles.restype = ctypes.c_int
    ns = SimpleNamespace(gemm=gemm, tiles=bool(lib.bidirectional_tiles()))  # tiles: float32 AVX-512 tiles built
    for name, argtypes in _SIGNATURES.items():
        fns = {}
        for suffix in DTYPES.values():
            fn = getattr(lib, f"{name}_{suffix}")
            fn.argtypes, fn.restype = argtypes, None
            fns[suffix] = fn
        setattr(ns, name, fns)
    return ns


def usable(*tensors: torch.Tensor) -> bool:
    """Whether the compiled kernels can take these tensors: CPU, one dtype of float32/float64, not disabled."""
    dtype = tensors[0].dtype
    if disabled() or dtype not in DTYPES:
        return False
    if any(t.device.type != "cpu" or t.dtype != dtype for t in tensors):
        return False
    return library() is not None


def kernel(name: str, dtype: torch.dtype):
    """``(fn, gemm)``: the compiled function ``name`` (e.g. ``"chunk_forward"``) for ``dtype`` and the BLAS gemm
    pointer it takes first (callers check :func:`usable` before)."""
    lib, key = library(), DTYPES[dtype]
    return getattr(lib, name)[key], lib.gemm[key]


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """``x [B, T, H, X]`` with unit-stride rows that BLAS can read (a copy only for odd layouts)."""
    return x if x.stride(-1) == 1 and x.stride(1) >= x.shape[-1] and x.stride(1) > 0 else x.contiguous()


def heads(x: torch.Tensor) -> tuple[int, int, int, int]:
    """For ``x [B, L, H, X]`` with unit-stride rows: ``(pointer, batch stride, head stride, row stride)`` in
    elements, as the batched kernels take a strided tensor (the caller keeps x alive during the call)."""
    assert x.stride(3) == 1 and x.stride(1) >= x.shape[3], (x.shape, x.stride())
    return x.data_ptr(), x.stride(0), x.stride(2), x.stride(1)


def pointer(x: torch.Tensor | None):
    """A contiguous tensor's data pointer, or NULL (None) for x None."""
    return None if x is None else x.data_ptr()


def blocks(x: torch.Tensor | None, heads_first: bool = False) -> tuple:
    """For ``x [B, H, ...]`` (``[H, B, ...]`` if ``heads_first``) of contiguous per-sequence blocks: ``(pointer,
    batch stride, head stride)`` in elements, as the batched kernels take it; ``(None, 0, 0)`` for x None."""
    if x is None:
        return None, 0, 0
    assert x[0, 0].is_contiguous(), x.stride()
    sb, sh = (x.stride(1), x.stride(0)) if heads_first else (x.stride(0), x.stride(1))
    return x.data_ptr(), sb, sh


_POOL: ThreadPoolExecutor | None = None  # the worker threads, kept between calls (see run_parallel)


def _pool(workers: int) -> ThreadPoolExecutor:
    """The process's worker threads, at least ``workers`` of them, kept between calls: a fresh 2-thread pool per call
    took 210 us on this VM against 39 us for a task on a kept pool (docs/bench/threads/thread_start.txt)."""
    global _POOL
    if _POOL is None or _POOL._max_workers < workers:
        old, _POOL = _POOL, ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kernelized")
        if old is not None:
            old.shutdown(wait=False)
    return _POOL


def _forget_pool() -> None:  # a forked child has none of its parent's threads
    global _POOL
    _POOL = None


os.register_at_fork(after_in_child=_forget_pool)


def run_parallel(fn, n_items: int, groups_per_worker: int = 4) -> None:
    """Run ``fn(items)`` over ``range(n_items)`` (heads, or (batch, head) pairs). With several torch threads, the
    items go in contiguous groups (a few per worker; one item each when there are few) to as many Python
    threads, each running its ops single-threaded: the small ops need no OpenMP barrier (which on a busy,
    oversubscribed machine stalled each op on a descheduled thread), and a thread slowed by other load takes
    fewer groups instead of holding up the rest. The threads persist between calls (:func:`_pool`)."""
    n = torch.get_num_threads()
    workers = min(n, n_items)
    if workers <= 1:
        with torch.no_grad():
            fn(range(n_items))
        return
    size = max(1, n_items // (workers * groups_per_worker))
    groups = [range(i, min(i + size, n_items)) for i in range(0, n_items, size)]

    def work(items: range) -> None:
        torch.set_num_threads(1)  # this worker's ops: single-threaded
        with torch.no_grad():
            fn(items)

    try:
        list(_pool(n).map(work, groups))
    finally:
        torch.set_num_threads(n)
