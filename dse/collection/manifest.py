"""The collection manifest: ``collection.json`` with a format version.

It records the encoder settings (family, model, revision, dim, resolution, prompt
version) and the index kind/parameters. A collection refuses to mix encoders: every
later open compares the encoder's settings against the manifest.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from indexes.storage import atomic_write_text

if TYPE_CHECKING:
    from dse.encoders.base import Encoder

FORMAT_VERSION = 1
MANIFEST_NAME = "collection.json"

#: encoder settings that must match for two encoders to produce compatible vectors
ENCODER_IDENTITY_KEYS = (
    "family",
    "model",
    "revision",
    "dim",
    "kind",
    "min_pixels",
    "max_pixels",
    "prompt_version",
    "adapter",
)


class CollectionError(RuntimeError):
    """A clear, user-facing error about a collection (missing, corrupted, incompatible)."""


class CollectionInputError(CollectionError):
    """A request the collection refuses, with nothing wrong with the collection itself: an empty
    query, a malformed filter, an unknown document, an option that contradicts how the
    collection was built... (the CLI exits with status 2 for these, 3 for other errors)."""


@dataclass
class Manifest:
    encoder: dict[str, Any]
    index: dict[str, Any]
    render: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    created_with: str = "dse"

    @property
    def kind(self) -> str:
        return str(self.encoder["kind"])

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        path = Path(directory) / MANIFEST_NAME
        if not Path(directory).is_dir():
            raise CollectionError(f"no collection at {directory}: the directory does not exist")
        if not path.is_file():
            raise CollectionError(f"{directory} is not a dse collection: {MANIFEST_NAME} is missing")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CollectionError(f"{path} is corrupted: {exc}") from exc
        if not isinstance(data, dict) or "format_version" not in data:
            raise CollectionError(f"{path} is corrupted: no format_version")
        version = data["format_version"]
        if version != FORMAT_VERSION:
            raise CollectionError(f"{path} has format version {version}; this dse reads version {FORMAT_VERSION}")
        try:
            return cls(
                encoder=dict(data["encoder"]),
                index=dict(data["index"]),
                render=dict(data.get("render", {})),
                format_version=version,
                created_with=data.get("created_with", "dse"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CollectionError(f"{path} is corrupted: missing or bad field {exc}") from exc

    def write(self, directory: Path) -> None:
        """Atomically (re)write the manifest (:func:`indexes.storage.atomic_write_text`)."""
        atomic_write_text(Path(directory) / MANIFEST_NAME, self.to_json())


def describe_encoder(settings: dict[str, Any]) -> str:
    """``"dse-qwen2 model '/models/x' (dim 64)"`` for encoder settings."""
    return f"{settings.get('family')} model {settings.get('model')!r} (dim {settings.get('dim')})"


def check_same_encoder(manifest_settings: dict[str, Any], settings: dict[str, Any]) -> None:
    """Raise :class:`CollectionInputError` naming the differing settings, if any."""
    diffs = [
        f"{k}: collection has {manifest_settings.get(k)!r}, encoder has {settings.get(k)!r}"
        for k in ENCODER_IDENTITY_KEYS
        if manifest_settings.get(k) != settings.get(k)
    ]
    if diffs:
        raise CollectionInputError(
            f"this collection was built with a different encoder, the {describe_encoder(manifest_settings)}, "
            f"not the {describe_encoder(settings)}: refusing to mix vectors (" + "; ".join(diffs) + ")"
        )


def load_encoder_from_settings(enc: dict[str, Any], *, device: str = "auto", dtype: Any = None) -> Encoder:
    """Load the encoder a collection's manifest describes (``manifest.encoder``), running on
    ``device`` with ``dtype``: how :attr:`Collection.encoder` and the Ray encoder actors load it."""
    options = {"query_instruction": enc["query_instruction"]} if enc.get("query_instruction") else {}
    from dse.encoders.base import Encoder

    return Encoder.load(
        enc["model"],
        family=enc.get("family"),
        device=device,
        dtype=dtype,
        dim=enc.get("dim"),
        max_pixels=enc.get("max_pixels"),
        min_pixels=enc.get("min_pixels"),
        adapter=enc.get("adapter"),
        **options,
    )
