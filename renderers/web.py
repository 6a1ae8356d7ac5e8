"""Web pages (http/https URLs and local .html files) as screenshots, via Playwright
driving the system Chromium (never a ``playwright install`` download).

One browser serves a whole job; sources render concurrently (an asyncio semaphore,
``settings.web_concurrency``) on an event loop in a background thread, in a pool
of reusable tabs (context + page). Between sources a tab goes to ``about:blank``
and its cookies are cleared; a tab that hit any error is closed; tabs are
recycled after :data:`TAB_MAX_USES` sources.

Modes (``settings.web_mode``):
  * ``viewport`` - the first screen of a 980x980 window (DSE's Wiki-SS setting);
  * ``full``     - the whole page (height capped at ``web_max_height``);
  * ``tiles``    - the whole page cut into viewport-high tiles, each tile a page.

Loading: wait for DOMContentLoaded up to ``web_timeout`` (else the source fails
with "timed out"), then for ``load`` within what is left of it (if it does not come,
whatever is there is captured), then best-effort network idle for ``web_idle_timeout``.

Playwright is the ``web`` extra: without it every web source fails with
:class:`~renderers.errors.WebExtraMissingError` (one line: what to install), checked before a
loop or a browser is started.

Safety: downloads are refused (a URL that answers with a download fails); every
``file://`` request is intercepted: a remote page may load none, a local HTML
file only files inside its own directory (after resolving symlinks).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import io
import logging
import math
import os
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

from PIL import Image

from renderers.errors import (
    BackendUnavailableError,
    DownloadBlockedError,
    HttpStatusError,
    NetworkError,
    NoPagesError,
    RenderError,
    RenderTimeoutError,
    WebError,
    WebExtraMissingError,
)
from renderers.records import PageRecord
from renderers.settings import RenderSettings, fit_to_budget, select_pages

log = logging.getLogger(__name__)

#: Chromium flags for running headless in a container/sandbox.
CHROMIUM_ARGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    # RFC 6761: names under .invalid never resolve; answer locally, never ask a DNS server.
    "--host-resolver-rules=MAP *.invalid ~NOTFOUND",
)

_NET_ERRORS: dict[str, tuple[type[WebError], str]] = {
    "ERR_NAME_NOT_RESOLVED": (NetworkError, "DNS lookup failed for host {host!r}"),
    "ERR_NAME_RESOLUTION_FAILED": (NetworkError, "DNS lookup failed for host {host!r}"),
    "ERR_CONNECTION_REFUSED": (NetworkError, "connection refused by {host} (unreachable)"),
    "ERR_ADDRESS_UNREACHABLE": (NetworkError, "host {host} is unreachable"),
    "ERR_CONNECTION_TIMED_OUT": (NetworkError, "connection to {host} timed out (unreachable)"),
    "ERR_CONNECTION_RESET": (NetworkError, "connection to {host} was reset"),
    "ERR_CONNECTION_CLOSED": (NetworkError, "connection to {host} was closed without a response"),
    "ERR_EMPTY_RESPONSE": (NetworkError, "{host} sent an empty response"),
    "ERR_INTERNET_DISCONNECTED": (NetworkError, "no network connection"),
    "ERR_ACCESS_DENIED": (NetworkError, "access denied to {url}"),
    "ERR_FILE_NOT_FOUND": (NetworkError, "file not found: {url}"),
    "ERR_TOO_MANY_REDIRECTS": (NetworkError, "too many redirects"),
    "ERR_INVALID_URL": (NetworkError, "invalid URL {url!r}"),
}


def require_playwright() -> None:
    """Raise :class:`WebExtraMissingError` unless Playwright can be imported (found, not imported)."""
    try:
        found = importlib.util.find_spec("playwright") is not None
    except (ImportError, ValueError):  # a broken or half-removed install
        found = False
    if not found:
        raise WebExtraMissingError()


def find_chromium(explicit: str | None = None) -> str:
    """Chromium executable: ``explicit``, ``$DSE_CHROMIUM``, or ``chromium``/``chromium-browser`` on PATH."""
    for candidate in (explicit, os.environ.get("DSE_CHROMIUM")):
        if candidate:
            found = shutil.which(candidate)
            if found:
                return found
            raise BackendUnavailableError(f"Chromium executable not found: {candidate}")
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise BackendUnavailableError("Chromium not found: install chromium or set DSE_CHROMIUM / settings.chromium")


def file_url_allowed(url: str, allowed_dir: Path | None) -> bool:
    """Whether a ``file://`` ``url`` may be loaded by a page whose files live in ``allowed_dir``.

    ``None`` (remote pages) allows nothing. Paths are resolved (``..``, ``%2e%2e``,
    symlinks) before the containment check.
    """
    if allowed_dir is None:
        return False
    parts = urlsplit(url)
    if parts.scheme.lower() != "file" or parts.netloc not in ("", "localhost"):
        return False
    target = os.path.realpath(url2pathname(parts.path))
    root = os.path.realpath(allowed_dir)
    return target == root or target.startswith(root.rstrip(os.sep) + os.sep)


def _map_navigation_error(message: str, url: str) -> RenderError:
    host = urlsplit(url).hostname or url
    if "Download is starting" in message or "net::ERR_ABORTED" in message and "download" in message.lower():
        return DownloadBlockedError("the URL answers with a file download (downloads are blocked)")
    for code, (cls, template) in _NET_ERRORS.items():
        if f"net::{code}" in message:
            return cls(template.format(host=host, url=url))
    if "net::ERR_CERT" in message or "SSL" in message:
        return NetworkError(f"TLS/certificate error for {host}: {message.splitlines()[0]}")
    first = message.strip().splitlines()[0] if message.strip() else "unknown error"
    return WebError(f"navigation failed: {first}")


#: A tab is recycled (new context) after this many sources.
TAB_MAX_USES = 50


@dataclass
class _Tab:
    """A reusable browser context + page; serves one source at a time.

    Re-navigating an existing tab avoids starting a renderer process per source
    (about half the CPU per page, see bench/RESULTS.md). The ``file://`` guard and
    the download watch read the tab's *current* source settings.
    """

    context: Any
    page: Any
    allowed_dir: Path | None = None
    blocked: list[str] = field(default_factory=list)
    downloads: list[str] = field(default_factory=list)
    uses: int = 0


class WebRenderer:
    """Renders web sources with one shared Chromium; thread-safe ``submit``.

    ``submit(source)`` returns a future of the source's :class:`PageRecord` list (PNG
    bytes, decoded lazily). Call :meth:`close` to stop the browser and the loop.
    Up to ``web_concurrency`` tabs render at once and are reused between sources
    (cookies cleared in between; a tab that hit any error is discarded).
    """

    def __init__(self, settings: RenderSettings) -> None:
        self.settings = settings
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pw: Any = None
        self._browser: Any = None
        self._browser_lock: asyncio.Lock | None = None
        self._sem: asyncio.Semaphore | None = None
        self._idle_tabs: list[_Tab] = []

    # -- loop management ------------------------------------------------------

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    self._browser_lock = asyncio.Lock()
                    self._sem = asyncio.Semaphore(self.settings.web_concurrency)
                    ready.set()
                    loop.run_forever()

                self._thread = threading.Thread(target=run, name="dse-web", daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def submit(self, source: Any, *, on_done: Callable[[], None] | None = None) -> Future[list[PageRecord]]:
        """Start rendering ``source`` (a web :class:`~renderers.sources.Source`).

        Raises :class:`WebExtraMissingError` when Playwright is not installed."""
        require_playwright()
        loop = self._ensure_loop()
        fut = asyncio.run_coroutine_threadsafe(self._render(source), loop)
        if on_done is not None:
            fut.add_done_callback(lambda _f: on_done())
        return fut

    def close(self) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=60)
        except Exception as exc:  # pragma: no cover - best effort
            log.warning("closing the browser failed: %s", exc)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=30)
        loop.close()

    async def _shutdown(self) -> None:
        self._idle_tabs.clear()
        if self._browser is not None:
            try:
                await self._browser.close()
            finally:
                self._browser = None
        if self._pw is not None:
            try:
                await self._pw.stop()
            finally:
                self._pw = None

    async def _get_browser(self) -> Any:
        assert self._browser_lock is not None
        async with self._browser_lock:
            if self._browser is not None and self._browser.is_connected():
                return self._browser
            self._idle_tabs.clear()  # tabs of a dead browser are unusable
            exe = find_chromium(self.settings.chromium)
            try:
                from playwright.async_api import Error as PlaywrightError
                from playwright.async_api import async_playwright
            except ImportError:  # found by require_playwright but not importable
                raise WebExtraMissingError() from None

            if self._pw is None:
                self._pw = await async_playwright().start()
            try:
                self._browser = await self._pw.chromium.launch(
                    executable_path=exe,
                    headless=True,
                    args=list(CHROMIUM_ARGS),
                    timeout=60_000,
                )
            except PlaywrightError as exc:
                raise BackendUnavailableError(f"cannot start Chromium ({exe}): {str(exc).splitlines()[0]}") from None
            log.debug("launched Chromium %s (%s)", self._browser.version, exe)
            return self._browser

    # -- rendering --------------------------------------------------------------

    async def _render(self, source: Any) -> list[PageRecord]:
        browser = await self._get_browser()
        assert self._sem is not None
        async with self._sem:
            tab = self._idle_tabs.pop() if self._idle_tabs else await self._new_tab(browser)
            healthy = False
            try:
                records = await self._render_in_tab(tab, source)
                healthy = True
                return records
            finally:
                await self._release(tab, healthy)

    async def _new_tab(self, browser: Any) -> _Tab:
        vw, vh = self.settings.web_viewport
        context = await browser.new_context(
            viewport={"width": vw, "height": vh},
            device_scale_factor=1,
            accept_downloads=False,
            service_workers="block",
        )
        page = await context.new_page()
        tab = _Tab(context=context, page=page)

        async def guard(route: Any, request: Any) -> None:
            req_url = request.url
            if req_url[:5].lower() == "file:" and not file_url_allowed(req_url, tab.allowed_dir):
                tab.blocked.append(req_url)
                await route.abort("accessdenied")
                return
            await route.continue_()

        await context.route("**/*", guard)
        page.on("download", lambda d: tab.downloads.append(d.url))
        return tab

    async def _release(self, tab: _Tab, healthy: bool) -> None:
        from playwright.async_api import Error as PlaywrightError

        tab.uses += 1
        if healthy and tab.uses < TAB_MAX_USES and not tab.page.is_closed():
            try:
                # Unload the page (stop its scripts) before the tab serves another source.
                await tab.page.goto("about:blank", timeout=10_000)
                await tab.context.clear_cookies()
                self._idle_tabs.append(tab)
                return
            except PlaywrightError:
                pass
        with contextlib.suppress(PlaywrightError):  # the browser may be gone already
            await tab.context.close()

    async def _render_in_tab(self, tab: _Tab, source: Any) -> list[PageRecord]:
        from playwright.async_api import Error as PlaywrightError
        from playwright.async_api import TimeoutError as PlaywrightTimeout

        s = self.settings
        vw, vh = s.web_viewport
        if source.url is not None:
            url, tab.allowed_dir = source.url, None
        else:
            path = Path(source.path).resolve()
            url, tab.allowed_dir = path.as_uri(), path.parent
        tab.blocked.clear()
        tab.downloads.clear()
        page = tab.page
        try:
            timeout_ms = s.web_timeout * 1000
            loop = asyncio.get_running_loop()
            started = loop.time()
            try:
                response = await page.goto(url, wait_until="domcontentloaded", timeout=timeout_ms)
            except PlaywrightTimeout:
                raise RenderTimeoutError(f"timed out after {s.web_timeout:g}s waiting for the page to load") from None
            except PlaywrightError as exc:
                if tab.downloads:
                    raise DownloadBlockedError("the URL answers with a file download (downloads are blocked)") from None
                raise _map_navigation_error(str(exc), url) from None
            if tab.downloads:
                raise DownloadBlockedError("the URL answers with a file download (downloads are blocked)")
            if response is not None and response.status >= 400:
                reason = response.status_text or ""
                raise HttpStatusError(f"HTTP {response.status} {reason}".strip())
            remaining = max(0.0, s.web_timeout - (loop.time() - started))
            try:
                await page.wait_for_load_state("load", timeout=max(1.0, remaining * 1000))
            except PlaywrightTimeout:
                log.warning("%s: 'load' did not fire within %gs; capturing what is there", url, s.web_timeout)
            if s.web_idle_timeout > 0:
                try:
                    await page.wait_for_load_state("networkidle", timeout=s.web_idle_timeout * 1000)
                except PlaywrightTimeout:
                    log.debug("%s: network not idle after %gs", url, s.web_idle_timeout)
            title = (await page.title() or "").strip() or None
            shots = await self._capture(page, vw, vh, timeout_ms)
        except PlaywrightError as exc:
            raise WebError(f"rendering failed: {str(exc).splitlines()[0]}") from None
        if tab.blocked:
            log.warning("%s: blocked %d file:// request(s), e.g. %s", source.source, len(tab.blocked), tab.blocked[0])
        return [self._record(source, n, png, title, extra) for n, png, extra in shots]

    async def _capture(self, page: Any, vw: int, vh: int, timeout_ms: float) -> list[tuple[int, bytes, dict[str, Any]]]:
        s = self.settings
        if s.web_mode == "viewport":
            pages = select_pages(s.page_selection, 1)
            if not pages:
                raise NoPagesError(f"page selection {s.pages!r} selects nothing (viewport mode gives 1 page)")
            return [(1, await page.screenshot(type="png", timeout=timeout_ms), {})]
        height = int(
            await page.evaluate(
                "() => Math.max(document.documentElement ? document.documentElement.scrollHeight : 0,"
                " document.body ? document.body.scrollHeight : 0)"
            )
        )
        height = max(1, height)
        capped = min(height, s.web_max_height)
        if capped < height:
            log.warning("%s: page is %d px tall; capturing the first %d px", page.url, height, capped)
        if s.web_mode == "full":
            pages = select_pages(s.page_selection, 1)
            if not pages:
                raise NoPagesError(f"page selection {s.pages!r} selects nothing (full mode gives 1 page)")
            png = await page.screenshot(
                type="png", full_page=True, timeout=timeout_ms, clip={"x": 0, "y": 0, "width": vw, "height": capped}
            )
            return [(1, png, {"page_height": height})]
        n_tiles = math.ceil(capped / vh)
        pages = select_pages(s.page_selection, n_tiles)
        if not pages:
            raise NoPagesError(f"page selection {s.pages!r} selects none of the page's {n_tiles} tiles")
        shots = []
        for t in pages:
            y = (t - 1) * vh
            clip = {"x": 0, "y": y, "width": vw, "height": min(vh, capped - y)}
            png = await page.screenshot(type="png", full_page=True, clip=clip, timeout=timeout_ms)
            shots.append((t, png, {"tile": t, "tiles": n_tiles, "tile_top": y, "page_height": height}))
        return shots

    def _record(self, source: Any, page_no: int, png: bytes, title: str | None, extra: dict[str, Any]) -> PageRecord:
        s = self.settings
        with Image.open(io.BytesIO(png)) as im:
            w, h = im.size
            target = fit_to_budget(w, h, s.max_pixels)
            image = None
            if target != (w, h) or im.mode != "RGB":
                im.load()
                image = im.convert("RGB")
                if target != (w, h):
                    image = image.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
                png = b""
        settings = {
            "kind": "web",
            "mode": s.web_mode,
            "viewport": list(s.web_viewport),
            "max_pixels": s.max_pixels,
            **extra,
        }
        return PageRecord(
            doc_id=source.doc_id,
            page=page_no,
            source=source.source,
            title=title,
            width=target[0],
            height=target[1],
            settings=settings,
            _image=image,
            _png=png or None,
        )
