"""``Encoder.load``: resolve the model, detect its family, pick the runtime, build the encoder.

Steps (each failure is one :class:`EncoderError` line):

1. :func:`dse.encoders.sources.resolve_model` - local directory or hub snapshot,
   PEFT adapter repos resolved to base + adapter;
2. :func:`dse.encoders.detection.detect_family` unless ``family`` is given;
3. :func:`dse.encoders.devices.resolve_runtime` - device, dtype, attention kernel;
4. the family's ``from_source`` loads model and processor with ``from_pretrained``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from dse.encoders.detection import check_family, detect_family
from dse.encoders.devices import resolve_runtime
from dse.encoders.errors import EncoderError
from dse.encoders.registry import family_class
from dse.encoders.sources import resolve_model

if TYPE_CHECKING:  # pragma: no cover
    from dse.encoders.base import Encoder

logger = logging.getLogger(__name__)


def load_encoder(
    model: str,
    *,
    family: str | None = None,
    device: str = "auto",
    dtype: Any = None,
    dim: int | None = None,
    max_pixels: int | None = None,
    min_pixels: int | None = None,
    adapter: str | None = None,
    **options: Any,
) -> Encoder:
    """Load an encoder; see :meth:`dse.encoders.base.Encoder.load`."""
    source = resolve_model(str(model), adapter=adapter)
    name = check_family(family) if family else detect_family(source)
    cls = family_class(name)
    unknown = set(options) - set(getattr(cls, "OPTIONS", frozenset()))
    if unknown:
        raise EncoderError(f"option(s) {', '.join(sorted(unknown))} not supported by family {name!r}")
    if dim is not None and (not isinstance(dim, int) or dim < 1):
        raise EncoderError(f"dim must be a positive integer, got {dim!r}")
    for label, value in (("max_pixels", max_pixels), ("min_pixels", min_pixels)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise EncoderError(f"{label} must be a positive integer, got {value!r}")
    runtime = resolve_runtime(device, dtype)
    logger.info("loading %s as %s on %s", source.model, name, runtime.device)
    return cls.from_source(  # type: ignore[attr-defined]
        source,
        family=name,
        runtime=runtime,
        dim=dim,
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        **options,
    )
