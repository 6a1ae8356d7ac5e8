"""The family registry: family name -> :class:`~dse.encoders.base.Encoder` subclass.

Each family module registers its class with :func:`register_family` when it is imported;
:func:`family_class` imports the module of a family (:data:`~dse.encoders.detection.FAMILY_MODULES`)
on first use, so model code is only imported for the family being loaded.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from dse.encoders.detection import FAMILY_MODULES, check_family
from dse.encoders.errors import EncoderError

if TYPE_CHECKING:  # pragma: no cover
    from dse.encoders.base import Encoder

    E = TypeVar("E", bound=Encoder)

#: family name -> encoder class
FAMILIES: dict[str, type[Encoder]] = {}


def register_family(*names: str) -> Callable[[type[E]], type[E]]:
    """Class decorator: make an :class:`~dse.encoders.base.Encoder` subclass loadable under ``names``."""

    def deco(cls: type[E]) -> type[E]:
        for name in names:
            FAMILIES[name] = cls
        return cls

    return deco


def family_class(family: str) -> type[Encoder]:
    """The encoder class registered for ``family`` (imports its module on first use)."""
    name = check_family(family)
    if name not in FAMILIES:
        importlib.import_module(FAMILY_MODULES[name])
    if name not in FAMILIES:  # pragma: no cover - a module that forgot to register
        raise EncoderError(f"family {name!r} has no registered encoder")
    return FAMILIES[name]
