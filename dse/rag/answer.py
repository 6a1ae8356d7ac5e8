"""Visual RAG: retrieve the top-k pages of a collection, let a VLM answer from their images.

:func:`answer_question` (also :func:`ask`, ``dse ask``, ``POST /answer``):

1. ``collection.search(question, k=k, where=where)`` ranks the pages;
2. the page images, in rank order, and the question go to the :class:`~dse.rag.generator.Generator`
   (page ``i`` is labelled ``[i]`` and the prompt asks for citations like ``[1]``);
3. the answer's citations are parsed (:func:`parse_citations`): the cited pages are the pages
   with those numbers; when the answer cites none, every given page is returned as its context
   (``Answer.cited_pages_source`` says which).
"""

from __future__ import annotations

import logging
import re
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from PIL import Image

from dse.rag.generator import DEFAULT_GENERATOR, Generator, RAGError
from renderers import RenderError, load_image

if TYPE_CHECKING:  # pragma: no cover
    from dse.collection import Collection, Hit

logger = logging.getLogger(__name__)


class NoPagesError(RAGError):
    """The search returned no page to answer from (empty collection, or ``where`` matched nothing)."""


#: ``[1]``, ``[1, 3]``, ``[2-4]``, ``[1][2]``, ``[page 2]``, ``[p. 2]``, ``[Pages 1 and 3]``.
_CITATION = re.compile(r"\[\s*(?:pages?|pp?\.?)?\s*(\d+(?:\s*(?:,|;|-|\u2013|and|&)\s*\d+)*)\s*\]", re.IGNORECASE)
_NUMBER_OR_RANGE = re.compile(r"(\d+)\s*(?:[-\u2013]\s*(\d+))?")


def parse_citations(text: str, n_pages: int) -> list[int]:
    """Page numbers (1-based, ``1..n_pages``) cited in ``text``, in order of first citation.

    Recognises ``[1]``, ``[1, 3]``, ``[1; 3]``, ``[2-4]`` (a range), ``[page 2]``, ``[p. 2]`` and
    ``[pages 1 and 3]``. Numbers outside ``1..n_pages`` are ignored (logged at DEBUG level).
    """
    found: list[int] = []
    for match in _CITATION.finditer(text):
        for part in _NUMBER_OR_RANGE.finditer(match.group(1)):
            lo = int(part.group(1))
            hi = int(part.group(2)) if part.group(2) else lo
            # a reversed or implausible range: take its ends only
            numbers = [lo, hi] if hi < lo or hi - lo > n_pages else list(range(lo, hi + 1))
            for number in numbers:
                if 1 <= number <= n_pages:
                    if number not in found:
                        found.append(number)
                else:
                    logger.debug("ignoring citation [%d]: only %d page(s) were given", number, n_pages)
    return found


@dataclass
class Answer:
    """A generated answer and the pages behind it.

    ``pages``: the retrieved pages given to the generator, in rank order (page ``[i]`` of the prompt
    is ``pages[i-1]``). ``citations``: the page numbers the answer cites (valid ones, in order of
    first citation). ``cited_pages``: those pages, or all of ``pages`` when the answer cites none;
    ``cited_pages_source`` is ``"citations"`` or ``"all_retrieved"`` accordingly.
    ``timings``: seconds spent in ``retrieve``, ``generate`` and ``total``.
    """

    question: str
    answer: str
    pages: list[Hit]
    citations: list[int] = field(default_factory=list)
    cited_pages: list[Hit] = field(default_factory=list)
    cited_pages_source: Literal["citations", "all_retrieved"] = "all_retrieved"
    generator: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict. Each page is its :meth:`Hit.to_dict` plus ``number`` (its citation number)
        and ``cited`` (whether the answer cites it)."""
        cited = set(self.citations)

        def page(number: int, hit: Hit) -> dict[str, Any]:
            return {**hit.to_dict(), "number": number, "cited": number in cited}

        numbers = {h.page_id: i for i, h in enumerate(self.pages, start=1)}
        return {
            "question": self.question,
            "answer": self.answer,
            "pages": [page(i, h) for i, h in enumerate(self.pages, start=1)],
            "citations": list(self.citations),
            "cited_pages": [page(numbers.get(h.page_id, 0), h) for h in self.cited_pages],
            "cited_pages_source": self.cited_pages_source,
            "generator": self.generator,
            "timings": dict(self.timings),
        }


def build_answer(
    question: str, text: str, pages: list[Hit], *, generator: str | None = None, timings: dict[str, float] | None = None
) -> Answer:
    """An :class:`Answer` for generated ``text`` over ``pages`` (rank order), citations resolved."""
    citations = parse_citations(text, len(pages))
    cited = [pages[n - 1] for n in citations] if citations else list(pages)
    return Answer(
        question=question,
        answer=text,
        pages=list(pages),
        citations=citations,
        cited_pages=cited,
        cited_pages_source="citations" if citations else "all_retrieved",
        generator=generator,
        timings=dict(timings or {}),
    )


def validate_request(question: Any, k: Any) -> str:
    """The stripped question; :class:`RAGError` for a blank question or ``k`` not an integer >= 1."""
    if not isinstance(question, str) or not question.strip():
        raise RAGError("empty question: give a question to answer")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise RAGError(f"k must be an integer of at least 1, got {k!r}")
    return question.strip()


def load_page_images(hits: list[Hit]) -> tuple[list[Hit], list[Image.Image]]:
    """The hits whose page image can be read (:func:`renderers.load_image`), and those images (RGB).
    Unreadable images are skipped with a warning naming the file (a damaged collection should not
    stop the answer)."""
    kept, images = [], []
    for hit in hits:
        path = Path(hit.image_path)
        try:
            images.append(load_image(path))
        except RenderError as exc:
            logger.warning("skipping page %s p.%d: cannot read its image %s: %s", hit.source, hit.page, path, exc)
            continue
        kept.append(hit)
    return kept, images


def answer_question(
    collection: Collection, question: str, *, generator: Generator, k: int = 3, where: Any = None
) -> Answer:
    """Answer ``question`` from the top-``k`` pages of ``collection`` (see the module doc).

    Raises :class:`RAGError` for an empty question or ``k < 1``, :class:`NoPagesError` when no page
    was retrieved (or none of their images can be read); search errors
    (:class:`dse.collection.CollectionError`) propagate.
    """
    question = validate_request(question, k)
    t0 = time.perf_counter()
    hits = collection.search(question, k=k, where=where)
    pages, images = load_page_images(hits)
    t1 = time.perf_counter()
    if not pages:
        if hits:
            raise NoPagesError(
                f"none of the {len(hits)} retrieved page images can be read; "
                f"the collection {collection.directory} may be damaged"
            )
        what = "no page matches the filter" if where else "the collection has no pages"
        raise NoPagesError(f"nothing to answer from: {what} ({collection.directory})")
    text = generator.generate(question, images)
    t2 = time.perf_counter()
    logger.info(
        "answered from %d page(s) in %.2fs (retrieve %.2fs, generate %.2fs)", len(pages), t2 - t0, t1 - t0, t2 - t1
    )
    return build_answer(
        question,
        text,
        pages,
        generator=generator.name,
        timings={"retrieve": t1 - t0, "generate": t2 - t1, "total": t2 - t0},
    )


#: generators loaded by :func:`ask`, per collection object (dropped with the collection)
_GENERATORS: weakref.WeakKeyDictionary[Collection, dict[str, Generator]] = weakref.WeakKeyDictionary()


def ask(
    collection: Collection,
    question: str,
    *,
    k: int = 3,
    generator: Generator | str | None = None,
    where: dict | None = None,
) -> Answer:
    """Visual RAG in one call: answer ``question`` from the top-``k`` pages of ``collection``.

    ``generator``: a :class:`Generator`, or a model name (hub id or local directory; default
    :data:`~dse.rag.generator.DEFAULT_GENERATOR`, Qwen/Qwen2-VL-2B-Instruct) loaded on the
    collection's device on first use and reused by later calls on the same collection object.
    The question and ``k`` are checked before any model is loaded. See :func:`answer_question`
    for the errors and the returned :class:`Answer`.
    """
    validate_request(question, k)
    if not isinstance(generator, Generator):
        loaded = _GENERATORS.setdefault(collection, {})
        name = DEFAULT_GENERATOR if generator is None else str(generator)
        if name not in loaded:
            loaded[name] = Generator.load(name, device=collection.device)
        generator = loaded[name]
    return answer_question(collection, question, generator=generator, k=k, where=where)
