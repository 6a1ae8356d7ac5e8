"""The one exception type of the encoders: :class:`EncoderError`."""

from __future__ import annotations


class EncoderError(ValueError):
    """A clear, user-facing error about a model or an input."""
