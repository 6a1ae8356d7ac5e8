"""Visual RAG: answer questions from a collection's page images with a Qwen2-VL / Qwen2.5-VL Instruct model.

::

    from dse import Collection
    from dse.rag import ask

    col = Collection.open("my-collection")
    ans = ask(col, "What was the 2021 revenue?", generator="Qwen/Qwen2-VL-2B-Instruct", k=3)
    ans.answer, ans.citations, [(p.source, p.page) for p in ans.cited_pages]

``ask`` loads the generator (hub id or local snapshot directory) on first use and keeps it for
later calls on the same collection; ``answer_question(col, question, generator=Generator.load(...))``
takes an already loaded :class:`Generator`.

Model code (torch, transformers) is imported only when a generator is loaded.
"""

from dse.rag.answer import (
    Answer,
    NoPagesError,
    answer_question,
    ask,
    build_answer,
    parse_citations,
    validate_request,
)
from dse.rag.generator import DEFAULT_GENERATOR, Generator, GeneratorError, RAGError

__all__ = [
    "DEFAULT_GENERATOR",
    "Answer",
    "Generator",
    "GeneratorError",
    "NoPagesError",
    "RAGError",
    "answer_question",
    "ask",
    "build_answer",
    "parse_citations",
    "validate_request",
]
