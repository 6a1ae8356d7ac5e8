"""``POST /answer``: retrieve ``k`` pages and let the generator answer from them (visual RAG).

The app lists this operation in its OpenAPI document only when it runs with a generator
(``/info`` ``features.answer``); without one the route still answers, with a 503 that says how
to turn answer mode on.
"""

import time
from typing import Any

from fastapi import APIRouter, Depends, Request

from dse.collection import Hit
from dse.server.deps import State, run_blocking
from dse.server.limits import RequestError
from dse.server.routes.search import JSON_TYPES, hit_out
from dse.server.schemas import AnswerResponse, RequestModels, error_responses, where_of


def answer_out(answer: Any) -> dict[str, Any]:
    """A :class:`dse.rag.Answer` as the API returns it (pages as :func:`hit_out` + number + cited)."""
    citations = [int(n) for n in getattr(answer, "citations", [])]
    numbers = {h.page_id: i for i, h in enumerate(answer.pages, start=1)}

    def page(hit: Hit) -> dict[str, Any]:
        number = numbers.get(hit.page_id, 0)
        return {**hit_out(hit), "number": number, "cited": number in citations}

    cited = getattr(answer, "cited_pages", None) or list(answer.pages)
    return {
        "question": answer.question,
        "answer": answer.answer,
        "pages": [page(h) for h in answer.pages],
        "citations": citations,
        "cited_pages": [page(h) for h in cited],
        "cited_pages_source": getattr(answer, "cited_pages_source", "citations" if citations else "all_retrieved"),
        "generator": getattr(answer, "generator", None),
    }


async def json_body(request: Request) -> None:
    """415 for a body that is not JSON (before FastAPI tries to read it as the model)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in JSON_TYPES and not media.endswith("+json"):
        raise RequestError(415, f"unsupported content type {media!r}; send application/json")


def build(models: RequestModels) -> APIRouter:
    """The answer router for these request models."""
    router = APIRouter(tags=["answer"])
    AnswerRequest = models.answer

    @router.post(
        "/answer",
        response_model=AnswerResponse,
        dependencies=[Depends(json_body)],
        responses=error_responses(400, 404, 413, 415, 422),
    )
    async def answer(body: AnswerRequest, state: State) -> dict[str, Any]:  # type: ignore[valid-type]
        """Retrieve ``k`` pages and let the generator answer from them (404 when no page matches the filters)."""
        started = time.perf_counter()
        filters = body.filters if body.filters is not None else body.where  # type: ignore[attr-defined]
        where = where_of(filters)
        if not state.answer_enabled:
            state.answer(body.question, k=body.k, where=where)  # type: ignore[attr-defined]  # raises the 503
        result = await run_blocking(state.answer, body.question, k=body.k, where=where)  # type: ignore[attr-defined]
        return {**answer_out(result), "took_ms": round((time.perf_counter() - started) * 1000, 2)}

    return router
