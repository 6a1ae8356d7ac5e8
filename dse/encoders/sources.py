"""Where a model's files are: a local directory or a hub id, through one code path.

:func:`resolve_model` turns the ``model`` argument into a :class:`ModelSource`:

* an existing local directory is used as is;
* anything else that looks like a hub id (``owner/name``) is fetched with
  ``huggingface_hub.snapshot_download`` (or found in the local hub cache) and then
  loaded from that snapshot directory exactly like a local one;
* a PEFT adapter directory (``adapter_config.json``, as the ColQwen2/ColPali hub repos
  are) resolves to its base model (``base_model_name_or_path``) plus the adapter.

No network gives one clear :class:`EncoderError` line instead of a traceback.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dse.encoders.errors import EncoderError

logger = logging.getLogger(__name__)

#: Files fetched from the hub for a model snapshot (weights, configs, tokenizer, templates;
#: ``*.py`` only so that marker files such as GME's ``gme_inference.py`` are seen; never executed).
SNAPSHOT_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken", "*.py"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_SNAPSHOT_DIR = re.compile(r"[\\/]snapshots[\\/]([0-9a-f]{40})(?:[\\/]|$)")


class ModelNotFound(EncoderError):
    """The model directory or hub id does not exist, or the hub cannot be reached."""


@dataclass
class ModelSource:
    """A resolved model: local snapshot directory plus how the user named it."""

    name: str  #: what the user passed (hub id or path)
    model: str  #: canonical name: the hub id, or the absolute path of a local directory
    path: Path  #: local directory holding config/weights
    revision: str | None = None  #: commit hash when known
    adapters: list[Path] = field(default_factory=list)  #: PEFT adapters applied in order
    processor_path: Path | None = None  #: where the processor files are (adapter repos carry them)

    @property
    def config(self) -> dict[str, Any]:
        """``config.json`` of the base model as a dict (empty when absent)."""
        return read_json(self.path / "config.json")

    @property
    def hint_names(self) -> list[str]:
        """Model names that may carry a family hint: the last component of the user's name
        (hub repo name or directory name), of the base and adapter directories, and the
        repo folder of hub-cache snapshots (``models--org--name``). Parent directories are
        ignored (``/work/gme_runs/dse-model`` names a DSE model)."""
        names = [Path(self.name.rstrip("/\\")).name]
        for p in [self.path, *self.adapters]:
            names.append(p.name)
            if p.parent.name == "snapshots":
                names.append(p.parent.parent.name)
        return [n for n in names if n]


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``, or ``{}`` when the file does not exist."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EncoderError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise EncoderError(f"{path} does not hold a JSON object")
    return data


def revision_from_path(path: Path) -> str | None:
    """The commit hash of a hub-cache snapshot path (``.../snapshots/<sha>``), else None."""
    m = _SNAPSHOT_DIR.search(str(path.resolve()))
    return m.group(1) if m else None


def looks_like_hub_id(name: str) -> bool:
    """``owner/name`` with hub-legal characters and no path syntax."""
    return bool(_HUB_ID.match(name)) and not name.startswith((".", "~"))


def download_snapshot(repo_id: str, *, option: str = "--model") -> Path:
    """Fetch (or find in the local cache) a hub snapshot; raise :class:`ModelNotFound` with one line."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (
            GatedRepoError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError as exc:  # pragma: no cover - huggingface_hub ships with transformers
        raise ModelNotFound(f"huggingface_hub is not installed; cannot download {repo_id!r}") from exc
    hint = f"pass {option} /path/to/local/dir (a snapshot of {repo_id})"
    try:
        return Path(snapshot_download(repo_id, allow_patterns=SNAPSHOT_PATTERNS))
    except GatedRepoError as exc:
        raise ModelNotFound(
            f"{repo_id!r} is gated on the Hugging Face hub (log in and accept its terms); or {hint}"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise ModelNotFound(
            f"no model {repo_id!r} on the Hugging Face hub (or it is private); check the name or {hint}"
        ) from exc
    except RevisionNotFoundError as exc:  # pragma: no cover - we never pass a revision
        raise ModelNotFound(f"revision not found for {repo_id!r}; {hint}") from exc
    except LocalEntryNotFoundError as exc:
        raise ModelNotFound(f"cannot reach the Hugging Face hub to download {repo_id!r}; {hint}") from exc
    except (OSError, ConnectionError) as exc:
        raise ModelNotFound(f"cannot reach the Hugging Face hub to download {repo_id!r}; {hint}") from exc
    except Exception as exc:
        if "connect" in type(exc).__name__.lower() or "timeout" in type(exc).__name__.lower():
            raise ModelNotFound(f"cannot reach the Hugging Face hub to download {repo_id!r}; {hint}") from exc
        raise


def locate(name: str, *, option: str = "--model") -> Path:
    """Local directory for ``name``: the directory itself, or a downloaded hub snapshot.

    ``option`` is the command-line option a download failure's hint names (``--model``,
    ``--generator``, ...)."""
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelNotFound(f"model {name!r} is a file; pass the model directory (with config.json)")
        return path.resolve()
    if looks_like_hub_id(name):
        return download_snapshot(name, option=option)
    raise ModelNotFound(f"model directory {name!r} does not exist (and it is not a hub id like owner/name)")


def _has_processor_files(path: Path) -> bool:
    return any(
        (path / f).is_file()
        for f in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json", "tokenizer.json")
    )


def resolve_model(name: str, *, adapter: str | None = None, option: str = "--model") -> ModelSource:
    """Resolve ``name`` (and an optional extra adapter dir) to a :class:`ModelSource`.

    ``option``: the command-line option that download-failure hints name."""
    if not isinstance(name, str) or not name.strip():
        raise ModelNotFound("no model given; pass a hub id (owner/name) or a local model directory")
    path = locate(name, option=option)
    model = name if not Path(name).expanduser().exists() else str(path)
    revision = revision_from_path(path)
    adapters: list[Path] = []
    processor_path: Path | None = None
    seen = {path}
    # An adapter repo points at its base; follow the chain (adapter-on-adapter is rare but legal).
    while (path / "adapter_config.json").is_file() and not (path / "config.json").is_file():
        cfg = read_json(path / "adapter_config.json")
        base = cfg.get("base_model_name_or_path")
        if not base:
            raise EncoderError(f"{path}/adapter_config.json has no base_model_name_or_path; cannot find the base model")
        adapters.insert(0, path)
        if processor_path is None and _has_processor_files(path):
            processor_path = path
        logger.info("%s is a PEFT adapter on %s", path, base)
        path = locate(str(base))
        if path in seen:
            raise EncoderError(f"adapter chain loops at {path}")
        seen.add(path)
    if not (path / "config.json").is_file():
        raise EncoderError(f"{path} has no config.json (nor adapter_config.json); it is not a model directory")
    if adapter is not None:
        adapter_path = Path(adapter).expanduser()
        if not (adapter_path / "adapter_config.json").is_file():
            if not adapter_path.exists() and looks_like_hub_id(adapter):
                adapter_path = download_snapshot(adapter)
            if not (adapter_path / "adapter_config.json").is_file():
                raise ModelNotFound(f"adapter {adapter!r} is not a PEFT adapter directory (no adapter_config.json)")
        adapters.append(adapter_path.resolve())
    return ModelSource(
        name=name,
        model=model,
        path=path,
        revision=revision,
        adapters=adapters,
        processor_path=processor_path or path,
    )
