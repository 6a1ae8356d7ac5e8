"""Visual RAG: answer questions from a collection's page images with a Qwen2-VL / Qwen2.5-VL Instruct model.

::

    from dse import Collection
    from dse.rag import Generator, answer_question

    col = Collection.open("my-collection")
    gen = Generator.load("Qwen/Qwen2-VL-2B-Instruct")          # hub id or local snapshot directory
    ans = answer_question(col, "What was the 2021 revenue?", generator=gen, k=3)
    ans.answer, ans.citations, [(p.source, p.page) for p in ans.cited_pages]
    # or: col.ask("What was the 2021 revenue?", generator="Qwen/Qwen2-VL-2B-Instruct")

Model code (torch, transformers) is imported only when a generator is loaded.
"""

from dse.rag.answer import Answer, NoPagesError, answer_question, build_answer, parse_citations, validate_request
from dse.rag.generator import DEFAULT_GENERATOR, Generator, GeneratorError, RAGError

__all__ = [
    "DEFAULT_GENERATOR",
    "Answer",
    "Generator",
    "GeneratorError",
    "NoPagesError",
    "RAGError",
    "answer_question",
    "build_answer",
    "parse_citations",
    "validate_request",
]
