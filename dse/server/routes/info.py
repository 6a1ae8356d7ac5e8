"""``GET /health`` (liveness, never behind the key) and ``GET /info`` (collection, features, limits)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from dse.server.deps import State, run_blocking
from dse.server.schemas import HealthOut, InfoOut, error_responses

health_router = APIRouter(tags=["service"])
router = APIRouter(tags=["service"])


@health_router.get("/health", response_model=HealthOut, responses=error_responses(422))
async def health() -> dict[str, Any]:
    """Liveness: always answers while the server runs (no API key needed)."""
    return {"status": "ok"}


@router.get("/info", response_model=InfoOut, responses=error_responses(422))
async def info(state: State) -> dict[str, Any]:
    """Collection statistics (documents, pages, model), enabled features, request limits, batching counters."""
    result: dict[str, Any] = await run_blocking(state.info)
    return result
