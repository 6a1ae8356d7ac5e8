"""Optional extras: the packages each one brings, and one clear error when one is missing.

The core install renders (PDF, office documents, images), encodes, indexes and searches,
from the command line and from Python. Everything else is an extra of the ``dse`` package
(``pip install 'dse[serve]'``; ``uv sync --extra serve`` in a checkout):

=============  ==========================================  ========================================
extra          what needs it                               modules checked
=============  ==========================================  ========================================
``web``        web pages (http/https URLs, ``.html``)      playwright
``serve``      ``dse serve``, :mod:`dse.server`,           fastapi, uvicorn, python_multipart,
               similarity maps                             matplotlib, seaborn, einops
``eval``       ``dse eval``, :mod:`dse.eval` metrics,      datasets, pyarrow, pytrec_eval, bm25s,
               hub datasets, the OCR + BM25 baseline       pytesseract
``train``      ``dse train``, :mod:`dse.training`          (the ``eval`` modules)
``notebooks``  the notebooks under ``notebooks/``          nbclient, nbformat, ipykernel
``qdrant``     vectors in a Qdrant cluster                 qdrant_client
``ray``        distributed indexing on a Ray cluster       ray
=============  ==========================================  ========================================

:func:`require` raises :class:`MissingExtraError`, an :class:`ImportError` whose message is
one line saying what to install; the command line prints it as
``dse serve: error: the 'serve' extra is not installed: pip install 'dse[serve]'``.
Web pages are rendered by :mod:`renderers`, which cannot import ``dse``: it raises its own
:class:`renderers.errors.WebExtraMissingError` with the same text.
"""

from __future__ import annotations

import importlib.util
import logging

logger = logging.getLogger(__name__)

_EVAL = ("datasets", "pyarrow", "pytrec_eval", "bm25s", "pytesseract")

#: extra -> top-level modules that must be importable for it to count as installed
EXTRAS: dict[str, tuple[str, ...]] = {
    "web": ("playwright",),
    "serve": ("fastapi", "uvicorn", "python_multipart", "matplotlib", "seaborn", "einops"),
    "eval": _EVAL,
    "train": _EVAL,
    "notebooks": ("nbclient", "nbformat", "ipykernel"),
    "qdrant": ("qdrant_client",),
    "ray": ("ray",),
}

_installed: set[str] = set()


class MissingExtraError(ImportError):
    """An optional extra is not installed. ``str(exc)`` is the one-line install hint;
    ``extra`` names the extra and ``name`` the first missing module."""

    def __init__(self, extra: str, missing: str | None = None) -> None:
        super().__init__(install_hint(extra), name=missing)
        self.extra = extra


def install_hint(extra: str) -> str:
    """``the 'serve' extra is not installed: pip install 'dse[serve]'``."""
    return f"the {extra!r} extra is not installed: pip install 'dse[{extra}]'"


def _check_name(extra: str) -> tuple[str, ...]:
    try:
        return EXTRAS[extra]
    except KeyError:
        raise ValueError(f"unknown extra {extra!r}; known: {', '.join(EXTRAS)}") from None


def missing_modules(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported (found without importing them)."""
    missing = []
    for module in _check_name(extra):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a broken or half-removed package
            found = False
        if not found:
            missing.append(module)
    return missing


def is_installed(extra: str) -> bool:
    """Whether every module of ``extra`` can be imported."""
    if extra in _installed:
        return True
    if missing_modules(extra):
        return False
    _installed.add(extra)
    return True


def require(extra: str) -> None:
    """Raise :class:`MissingExtraError` unless ``extra`` is installed (cheap after the first success)."""
    if extra in _installed:
        return
    missing = missing_modules(extra)
    if missing:
        logger.debug("extra %r: cannot import %s", extra, ", ".join(missing))
        raise MissingExtraError(extra, missing[0])
    _installed.add(extra)
