"""Size presets of the tiny-model builders."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def resolve_preset(
    presets: Mapping[str, Mapping[str, Any]], size: str, family: str, **overrides: Any
) -> dict[str, Any]:
    """The ``size`` preset with every non-``None`` override applied.

    Raises ``ValueError`` naming the family and the known sizes for an unknown ``size``.
    """
    if size not in presets:
        raise ValueError(f"unknown size {size!r} for {family}; choose one of {', '.join(presets)}")
    values = dict(presets[size])
    values.update({k: v for k, v in overrides.items() if v is not None})
    return values
