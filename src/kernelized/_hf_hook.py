"""Register kernelized's Hugging Face classes with `transformers` when (and only when) it is imported.

``import kernelized`` must be enough for ``AutoModelForCausalLM.from_pretrained(folder)`` to know
``model_type: kernelized`` (no ``trust_remote_code``), but importing transformers costs seconds and it is an
optional dependency. So: if transformers is already imported, :mod:`kernelized.models.hf` registers now;
otherwise a one-shot import hook waits for ``import transformers`` and registers right after that module has
run. Nothing happens when transformers is not installed.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys


def _register() -> None:
    import kernelized.models.hf  # noqa: F401  (registers AutoConfig / AutoModelForCausalLM on import)


class _Loader(importlib.abc.Loader):
    """transformers' own loader, then the registration."""

    def __init__(self, inner):
        self.inner = inner

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module) -> None:
        self.inner.exec_module(module)
        _register()


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "transformers":
            return None
        sys.meta_path.remove(self)  # one shot; also keeps find_spec below from finding us again
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


def register_with_transformers() -> None:
    if "transformers" in sys.modules:
        _register()
    elif not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
