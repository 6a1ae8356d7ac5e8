"""Connecting to Qdrant: the URL forms, shared local-mode clients, bounded retries, one-line errors.

URL forms (``url`` everywhere in :mod:`indexes.qdrant`):

* ``http://host:6333`` / ``https://...``: a Qdrant server or cluster (REST API);
* ``path:DIR``: qdrant-client's **local mode** stored in ``DIR``. It is Qdrant's own pure-Python
  implementation of the API, for tests and development only: every point is held in memory,
  its storage is pickled, one process at a time may open ``DIR``, and it is slow;
* ``:memory:``: local mode in memory, shared by the whole process (unit tests).

Every client call goes through :meth:`Connection.call`: transient failures (connection refused or
reset, timeouts, HTTP 408/429/502/503/504) are retried with exponential backoff and a bound on the
attempts; what remains becomes a :class:`QdrantError` whose message is one line naming the URL.
The API key is sent in a header and appears in no message or log record.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from indexes.errors import VectorIndexError

logger = logging.getLogger(__name__)

LOCAL_PREFIX = "path:"
MEMORY = ":memory:"
INSTALL_HINT = "the Qdrant backend needs qdrant-client: install the 'qdrant' extra (`pip install 'dse[qdrant]'`)"


class QdrantError(VectorIndexError):
    """Qdrant is unreachable, refuses the request, lacks the collection or answers with an error.

    ``url`` is the (credential-free) address; ``http_status`` is what an HTTP front end should
    answer for it (503 when Qdrant is unreachable, 502 for other upstream errors).
    """

    http_status = 502
    #: the Qdrant URL concerned, without credentials (set by :meth:`Connection.fail`)
    url: str | None = None


class QdrantUnavailableError(QdrantError):
    """Qdrant could not be reached (or stayed overloaded) after every retry."""

    http_status = 503


class QdrantRefusedError(QdrantError):
    """Qdrant refused the request (HTTP 401/403): a missing or wrong API key."""


class QdrantNotFoundError(QdrantError):
    """The Qdrant collection does not exist."""


def is_local(url: str) -> bool:
    """True for qdrant-client's local mode (``path:DIR`` or ``:memory:``)."""
    return url == MEMORY or url.startswith(LOCAL_PREFIX)


def normalize_url(url: str) -> str:
    """Check ``url`` and return its canonical form (``path:`` with an absolute directory).

    Raises :class:`QdrantError` for anything that is not ``http(s)://...``, ``path:DIR`` or ``:memory:``.
    """
    url = str(url).strip()
    if url == MEMORY:
        return url
    if url.startswith(LOCAL_PREFIX):
        directory = url[len(LOCAL_PREFIX) :].strip()
        if not directory:
            raise QdrantError("a local Qdrant URL needs a directory: path:DIR")
        return LOCAL_PREFIX + str(Path(directory).expanduser().resolve())
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise QdrantError(
            f"bad Qdrant URL {display_url(url)!r}: use http(s)://HOST[:PORT], path:DIR (local mode) or :memory:"
        )
    return url.rstrip("/")


def display_url(url: str) -> str:
    """``url`` without user info, query or fragment: safe to print and log."""
    if is_local(url):
        return url
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:  # IPv6
            host = f"[{host}]"
        netloc = host + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    except ValueError:
        return "<unparseable URL>"


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all; the n-th retry waits ``min(base_delay * 2**(n-1), max_delay)`` s (±25%)."""

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0

    def delay(self, retry: int) -> float:
        d = min(self.base_delay * (2 ** (retry - 1)), self.max_delay)
        return d * random.uniform(0.75, 1.25)


# ----------------------------------------------------------------------------- local-mode clients
class _Shared:
    def __init__(self, client: Any) -> None:
        self.client = client
        self.refs = 0
        self.lock = threading.RLock()


_local_clients: dict[str, _Shared] = {}
_local_guard = threading.Lock()
_warned: set[str] = set()


def _open_local(url: str) -> _Shared:
    """The process-wide local-mode client of ``url`` (local mode locks its directory: one client each)."""
    from qdrant_client import QdrantClient

    with _local_guard:
        shared = _local_clients.get(url)
        if shared is None:
            if url not in _warned:
                _warned.add(url)
                logger.warning(
                    "Qdrant %s is qdrant-client's local mode: for tests and development only (pure Python, "
                    "every point in memory, pickled storage, one process at a time); use a Qdrant server "
                    "for real collections",
                    url,
                )
            try:
                where: dict[str, Any] = {"location": MEMORY} if url == MEMORY else {"path": url[len(LOCAL_PREFIX) :]}
                client = QdrantClient(**where)
            except (RuntimeError, OSError, ValueError) as exc:
                msg = str(exc)
                if "already accessed" in msg:
                    msg = (
                        "its directory is in use by another process (local mode allows one process at a time; "
                        "use a Qdrant server to share a collection)"
                    )
                raise QdrantError(f"cannot open the local Qdrant {url}: {msg}") from None
            shared = _local_clients[url] = _Shared(client)
        shared.refs += 1
        return shared


def _release_local(url: str) -> None:
    with _local_guard:
        shared = _local_clients.get(url)
        if shared is None:
            return
        shared.refs -= 1
        if shared.refs <= 0:
            del _local_clients[url]
            if url != MEMORY:  # an in-memory store would be lost; keep its client for the process
                shared.client.close()
            else:
                _local_clients[url] = shared
                shared.refs = 0


# ----------------------------------------------------------------------------- errors
def _server_detail(exc: Any) -> str:
    """The ``status.error`` text of a Qdrant error response, else its reason phrase."""
    try:
        body = json.loads(exc.content)
        detail = body.get("status", {}).get("error") if isinstance(body, dict) else None
        if detail:
            return str(detail)
    except (ValueError, TypeError, AttributeError):
        pass
    return str(getattr(exc, "reason_phrase", "") or "")


def classify(exc: BaseException) -> tuple[str, str]:
    """``(kind, detail)`` of a client exception; kind is transient, refused, missing or error."""
    try:
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse
    except ImportError:  # pragma: no cover
        return "error", str(exc)
    import httpx

    if isinstance(exc, UnexpectedResponse):
        status = exc.status_code
        detail = _server_detail(exc)
        text = f"HTTP {status} {exc.reason_phrase}".strip() + (f": {detail}" if detail else "")
        if status in (408, 429, 502, 503, 504):
            return "transient", text
        if status in (401, 403):
            return "refused", text
        if status == 404:
            return "missing", text
        return "error", text
    if isinstance(exc, ResponseHandlingException):
        src = exc.source
        return "transient", (str(src) or type(src).__name__) if src is not None else "no response"
    if isinstance(exc, httpx.TransportError | ConnectionError | TimeoutError):
        return "transient", str(exc) or type(exc).__name__
    try:
        import grpc

        if isinstance(exc, grpc.RpcError):
            code = exc.code() if hasattr(exc, "code") else None
            name = getattr(code, "name", str(code))
            details = exc.details() if hasattr(exc, "details") else ""
            text = f"gRPC {name}: {details}"
            if name in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED"):
                return "transient", text
            if name in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
                return "refused", text
            if name == "NOT_FOUND":
                return "missing", text
            return "error", text
    except ImportError:  # pragma: no cover
        pass
    return "error", str(exc) or type(exc).__name__


# ----------------------------------------------------------------------------- connection
class Connection:
    """A client for one Qdrant URL, with retries and safe error messages.

    ``error_class``: the :class:`QdrantError` subclass raised for failures (an application may
    pass a subclass that is also its own error type). ``timeout``: seconds per request.
    """

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        error_class: type[QdrantError] = QdrantError,
        prefer_grpc: bool = False,
    ) -> None:
        try:
            import qdrant_client  # noqa: F401
        except ImportError as exc:
            raise ImportError(INSTALL_HINT) from exc
        self.url = normalize_url(url)
        self.display = display_url(self.url)
        self.local = is_local(self.url)
        self.retry = retry or RetryPolicy()
        self.error_class = error_class
        self._secret = api_key or None
        self._sleep: Callable[[float], None] = time.sleep
        self._closed = False
        if self.local:
            self._shared: _Shared | None = _open_local(self.url)
            self.client = self._shared.client
            self._lock: Any = self._shared.lock
        else:
            from qdrant_client import QdrantClient

            self._shared = None
            self._lock = _NoLock()
            with warnings.catch_warnings():
                # "Api key is used with an insecure connection": said once below, through logging
                warnings.filterwarnings("ignore", message="Api key is used with an insecure connection")
                self.client = QdrantClient(
                    url=self.url,
                    api_key=self._secret,
                    timeout=int(max(1, round(timeout))),
                    prefer_grpc=prefer_grpc,
                    check_compatibility=False,
                )
            if self._secret and urlsplit(self.url).scheme == "http":
                logger.warning(
                    "the Qdrant API key is sent over plain http to %s; use https outside a trusted network",
                    self.display,
                )

    def __repr__(self) -> str:  # never shows the key
        return f"Connection({self.display!r})"

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.local:
            _release_local(self.url)
        else:
            with contextlib.suppress(Exception):  # closing is best effort
                self.client.close()

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def fail(self, message: str, cls: type[QdrantError] | None = None) -> QdrantError:
        """A :class:`QdrantError` of ``error_class`` (mixed with ``cls``) with a scrubbed one-line message."""
        message = self._scrub(" ".join(message.split()))
        error = _mixed(self.error_class, cls)(message)
        error.url = self.display
        return error

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` with retries of transient failures; ``what`` names the operation."""
        attempt = 0
        while True:
            attempt += 1
            try:
                with self._lock:
                    return fn(*args, **kwargs)
            except QdrantError:
                raise
            except Exception as exc:
                logger.debug("Qdrant %s: %s raised %s", self.display, what, type(exc).__name__)
                if self.local:
                    text = str(exc)
                    missing = "not found" in text.lower() or "doesn't exist" in text.lower()
                    raise self.fail(
                        f"local Qdrant {self.display}: {what} failed: {text}", QdrantNotFoundError if missing else None
                    ) from None
                kind, detail = classify(exc)
                if kind == "transient" and attempt < self.retry.attempts:
                    delay = self.retry.delay(attempt)
                    logger.info(
                        "Qdrant %s: %s failed (%s); retry %d of %d in %.1fs",
                        self.display,
                        what,
                        self._scrub(detail),
                        attempt,
                        self.retry.attempts - 1,
                        delay,
                    )
                    self._sleep(delay)
                    continue
                if kind == "transient":
                    raise self.fail(
                        f"cannot reach Qdrant at {self.display}: {detail} ({what}; gave up after {attempt} attempts)",
                        QdrantUnavailableError,
                    ) from None
                if kind == "refused":
                    raise self.fail(
                        f"Qdrant at {self.display} refused the request ({detail}); check the API key "
                        "(--qdrant-api-key or $QDRANT_API_KEY)",
                        QdrantRefusedError,
                    ) from None
                if kind == "missing":
                    raise self.fail(f"Qdrant at {self.display}: {what}: {detail}", QdrantNotFoundError) from None
                raise self.fail(f"Qdrant at {self.display}: {what} failed: {detail}") from None


_mixed_classes: dict[tuple[type, type], type[QdrantError]] = {}


def _mixed(base: type[QdrantError], cls: type[QdrantError] | None) -> type[QdrantError]:
    """``base`` itself, or a subclass of both ``base`` and ``cls`` (made once per pair)."""
    if cls is None or issubclass(base, cls):
        return base
    if issubclass(cls, base):
        return cls
    key = (base, cls)
    if key not in _mixed_classes:
        _mixed_classes[key] = type(f"{base.__name__}{cls.__name__}", (base, cls), {"__module__": base.__module__})
    return _mixed_classes[key]


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: Any) -> None:
        return None
