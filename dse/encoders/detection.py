"""Family detection from a model's config.

Rules, in order (:func:`detect_family`):

1. ``config.json`` ``architectures`` names a colpali-engine class: ``ColQwen2`` ->
   ``colqwen2``, ``ColQwen2_5`` -> ``colqwen2.5``, ``ColPali`` -> ``colpali``,
   ``ColIdefics3`` -> ``colidefics3``. (For a PEFT adapter repo such as
   ``vidore/colqwen2-v1.0`` this is the base model's config.)
2. A Qwen2.5-VL model (``Qwen2_5_VLForConditionalGeneration`` / ``model_type``
   ``qwen2_5_vl``) -> ``dse-qwen2.5``.
3. A Qwen2-VL model (``Qwen2VLForConditionalGeneration`` / ``qwen2_vl``) is ambiguous
   between DSE and GME, which share the architecture. It is ``gme-qwen2`` when

   * the model's name contains ``gme`` as a word: the hub repo name
     (``Alibaba-NLP/gme-Qwen2-VL-2B-Instruct``), the directory's own name
     (``/models/gme_qwen2``; parent directories do not count) or a hub-cache repo
     folder (``models--Alibaba-NLP--gme-Qwen2-VL-2B-Instruct``), or
   * the snapshot holds ``gme_inference.py`` (published GME repos ship their reference
     inference script under that name; ``dse.testing.tiny`` writes the same marker),

   and ``dse-qwen2`` otherwise (the default). Pass ``family=`` to override.
4. Anything else fails with a message listing the supported families.
"""

from __future__ import annotations

import re

from dse.encoders.errors import EncoderError
from dse.encoders.sources import ModelSource

#: family name -> module that registers it (imported on demand by the loader).
FAMILY_MODULES: dict[str, str] = {
    "dse-qwen2": "dse.encoders.dse_qwen",
    "dse-qwen2.5": "dse.encoders.dse_qwen",
    "gme-qwen2": "dse.encoders.gme_qwen",
    "colqwen2": "dse.encoders.colpali_engine",
    "colqwen2.5": "dse.encoders.colpali_engine",
    "colpali": "dse.encoders.colpali_engine",
    "colidefics3": "dse.encoders.colpali_engine",
}

#: config ``architectures`` entry -> family
ARCHITECTURE_FAMILIES: dict[str, str] = {
    "ColQwen2": "colqwen2",
    "ColQwen2_5": "colqwen2.5",
    "ColPali": "colpali",
    "ColIdefics3": "colidefics3",
    "Qwen2_5_VLForConditionalGeneration": "dse-qwen2.5",
    "Qwen2VLForConditionalGeneration": "dse-qwen2",
}
#: config ``model_type`` -> family, when ``architectures`` says nothing we know
MODEL_TYPE_FAMILIES: dict[str, str] = {
    "qwen2_5_vl": "dse-qwen2.5",
    "qwen2_vl": "dse-qwen2",
}

GME_MARKER_FILE = "gme_inference.py"
_GME_WORD = re.compile(r"(?<![a-z0-9])gme(?![a-z])", re.IGNORECASE)


class UnknownFamily(EncoderError):
    """The family cannot be detected, or the requested family does not exist."""


def is_gme(source: ModelSource) -> bool:
    """The GME-vs-DSE rule for Qwen2-VL checkpoints (see the module doc)."""
    if any(_GME_WORD.search(name) for name in source.hint_names):
        return True
    return any((p / GME_MARKER_FILE).is_file() for p in [source.path, *source.adapters])


def check_family(family: str) -> str:
    """Normalise and validate a family name given by the user."""
    name = family.strip().lower()
    if name not in FAMILY_MODULES:
        raise UnknownFamily(f"unknown model family {family!r}; choose one of {', '.join(FAMILY_MODULES)}")
    return name


def detect_family(source: ModelSource) -> str:
    """Detect the family of a resolved model (rules in the module doc)."""
    config = source.config
    architectures = [a for a in config.get("architectures") or [] if isinstance(a, str)]
    model_type = config.get("model_type")
    family = next((ARCHITECTURE_FAMILIES[a] for a in architectures if a in ARCHITECTURE_FAMILIES), None)
    if family is None and not architectures:
        family = MODEL_TYPE_FAMILIES.get(model_type or "")
    if family is None:
        raise UnknownFamily(
            f"cannot detect the model family of {source.name!r} (config.json: architectures={architectures}, "
            f"model_type={model_type!r}); pass --family / family= one of {', '.join(FAMILY_MODULES)}"
        )
    if family == "dse-qwen2" and is_gme(source):
        family = "gme-qwen2"
    return family
