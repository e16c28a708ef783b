"""Import Gradio without the stub files it rewrites on every import: half of the studio's start-up.

Gradio's ``ComponentMeta`` calls ``create_or_modify_pyi`` for every component class it defines: it reads the
class's source file, parses it twice with ``ast`` and rewrites the ``.pyi`` stub beside it in site-packages. That
serves Gradio's own developers (the stubs are shipped in the wheel anyway) and costs about 1.1 s of the 2.2 s that
``import gradio`` takes on the 2-core build machine (``bench/startup.py``), on every launch, and it writes into the
installed package. ``import_gradio`` imports Gradio with that one function replaced by a no-op, through an import
hook that exists only while the import runs. If Gradio is already imported, or a future Gradio no longer has the
function, it imports Gradio as it is: nothing else changes.

This module imports nothing heavy: it is on the path to the studio's first page.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Sequence
from types import ModuleType
from typing import Any

STUB_MODULE = "gradio.component_meta"
STUB_WRITER = "create_or_modify_pyi"

_LOCK = threading.Lock()


def _skip_stub_files(*_args: Any, **_kwargs: Any) -> None:
    """Stands in for Gradio's stub-file writer: the installed stubs stay as the wheel shipped them."""


class _StubSkippingLoader(importlib.abc.Loader):
    """Runs ``gradio.component_meta`` with its own loader, then replaces its stub writer before any component
    class is defined (the component modules import it first)."""

    def __init__(self, inner: importlib.abc.Loader) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        if callable(getattr(module, STUB_WRITER, None)):
            setattr(module, STUB_WRITER, _skip_stub_files)


class _StubSkippingFinder(importlib.abc.MetaPathFinder):
    """Finds ``gradio.component_meta`` as the path finder would and wraps its loader; nothing else."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != STUB_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _StubSkippingLoader(spec.loader)
        return spec


def import_gradio() -> ModuleType:
    """``import gradio``, without the per-import stub rewriting when this is the process's first import of it."""
    with _LOCK:
        if "gradio" in sys.modules:
            return sys.modules["gradio"]
        finder = _StubSkippingFinder()
        sys.meta_path.insert(0, finder)
        try:
            return importlib.import_module("gradio")
        finally:
            sys.meta_path.remove(finder)
