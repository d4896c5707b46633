"""Argument checks shared by every layer: errors name the argument, what was expected and what came."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence

import torch


def check_positive_int(name: str, value, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_choice(name: str, value, choices: Sequence) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def check_float_tensor(name: str, x, *, ndim: int | None = None, shape_hint: str = "") -> torch.Tensor:
    """A floating-point tensor of the given rank; integer or boolean tensors are refused."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if ndim is not None and x.dim() != ndim:
        hint = f" {shape_hint}" if shape_hint else ""
        raise ValueError(f"{name} must have {ndim} dimensions{hint}, got shape {tuple(x.shape)}")
    return x


def check_same(names: Sequence[str], values: Sequence[int], what: str) -> None:
    """All values equal, e.g. the batch sizes of q, k and v."""
    if len(set(values)) > 1:
        got = ", ".join(f"{n}={v}" for n, v in zip(names, values))
        raise ValueError(f"{what} must agree, got {got}")


# -- command-line entry points ---------------------------------------------------------------------------
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError)


def command(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap a command's ``main(argv) -> int``: user errors become ``error: ...`` on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapped(argv: Sequence[str] | None = None) -> int:
        try:
            return int(main(list(sys.argv[1:] if argv is None else argv)) or 0)
        except USER_ERRORS as e:
            message = str(e) if not isinstance(e, OSError) or not e.filename else f"{e.filename}: {e.strerror}"
            print(f"error: {message}", file=sys.stderr)
            return 2

    return wrapped


def parse_list(text: str | None, name: str, cast=str) -> list | None:
    """``"a, b,c"`` -> ``["a", "b", "c"]`` (``cast`` applied); None stays None; bad items name the argument."""
    if text is None:
        return None
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise ValueError(f"{name} expects a comma-separated list, got {text!r}")
    try:
        return [cast(t) for t in items]
    except ValueError:
        kind = {int: "integers", float: "numbers"}.get(cast, "values")
        raise ValueError(f"{name} expects comma-separated {kind}, got {text!r}") from None
