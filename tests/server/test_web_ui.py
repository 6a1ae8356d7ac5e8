"""The web page in a real browser: Playwright (python) drives Debian's Chromium against a real uvicorn
server over a tiny colqwen2 collection with an API key and a tiny answer generator: the key from
``?key=``, a text search, the page viewer with a similarity map, a drag-and-dropped image query,
and answer mode; then (tiny dse-qwen2) the page's details as a person sees them: the favicon, the
API-key placeholder, thumbnails while they load, and ``/docs`` with nothing fetched from outside."""

from __future__ import annotations

import base64
import re
import shutil

import pytest
from support.server import Built, build_collection, live_server

from dse.server.app import create_app
from renderers.web import CHROMIUM_ARGS

KEY = "ui-test-key-42"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed"),
]


@pytest.fixture(scope="module")
def col_col(tiny_model_dir, tmp_path_factory) -> Built:
    return build_collection("colqwen2", tiny_model_dir("colqwen2"), tmp_path_factory.getbasetemp())


def test_search_viewer_similarity_image_and_answer(col_col: Built, tiny_model_dir) -> None:
    from playwright.sync_api import expect, sync_playwright

    app = create_app(
        col_col.directory,
        device="cpu",
        encoder=col_col.encoder,
        api_key=KEY,
        generator=str(tiny_model_dir("qwen2-vl-instruct")),
        generator_options={"max_new_tokens": 4},
    )
    query_png = base64.b64encode((col_col.corpus / "blue" / "p0.png").read_bytes()).decode()
    with live_server(app) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"), headless=True, args=list(CHROMIUM_ARGS))
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.set_default_timeout(60_000)

            # without the key the page says so; ?key= stores it and leaves the address bar
            page.goto(url + "/")
            expect(page.locator("#info")).to_contain_text("API key required")
            page.goto(url + f"/?key={KEY}")
            expect(page.locator("#info")).to_contain_text("5 pages")
            assert "key=" not in page.url
            assert page.evaluate("localStorage.getItem('dse.apiKey')") == KEY

            # text search -> result grid with thumbnails, scores, sources, page numbers
            page.fill("#query", "red block")
            page.select_option("#k", "5")
            page.press("#query", "Enter")
            hits = page.locator("#results .hit")
            expect(hits).to_have_count(5)
            expect(page.locator("#status")).to_contain_text("5 results (text query")
            first = hits.first
            expect(first.locator(".score")).to_have_text(re.compile(r"^-?\d+\.\d{4}$"))
            expect(first.locator(".source")).to_contain_text(" · p.1")
            page.wait_for_function("() => document.querySelector('#results .hit img').naturalWidth > 0")

            # click to enlarge, then the similarity map overlay
            first.click()
            expect(page.locator("#viewer")).to_be_visible()
            page.wait_for_function("() => document.getElementById('viewer-img').naturalWidth > 0")
            expect(page.locator("#sim-controls")).to_be_visible()
            page.check("#sim-toggle")
            page.wait_for_function(
                "() => document.getElementById('viewer-img').dataset.kind === 'similarity'"
                " && document.getElementById('viewer-img').naturalWidth > 0"
            )
            expect(page.locator("#viewer-status")).to_contain_text("Brighter patches")
            assert page.locator("#sim-token option").count() >= 2  # "all" + the query's word tokens
            page.select_option("#sim-token", index=1)
            expect(page.locator("#viewer-status")).to_contain_text("Brighter patches")
            page.click("#viewer-close")
            expect(page.locator("#viewer")).to_be_hidden()

            # drag and drop an image: an image query (the text cleared) finds that very page first
            expect(page.locator("#image-chip")).to_be_hidden()  # no empty preview before an image is chosen
            expect(page.locator("#drop-hint")).to_be_visible()
            page.fill("#query", "")
            page.evaluate(
                """(b64) => {
                const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                const dt = new DataTransfer();
                dt.items.add(new File([bytes], "blue.png", { type: "image/png" }));
                const drop = new DragEvent("drop", { dataTransfer: dt, bubbles: true });
                document.getElementById("drop").dispatchEvent(drop);
            }""",
                query_png,
            )
            expect(page.locator("#image-chip")).to_be_visible()
            expect(page.locator("#image-name")).to_have_text("blue.png")
            page.click("#search-button")
            expect(page.locator("#status")).to_contain_text("(image query")
            expect(hits.first.locator(".source")).to_have_attribute("title", str(col_col.corpus / "blue" / "p0.png"))

            # answer mode: generated answer + cited page thumbnails
            page.click("#tab-answer")
            page.fill("#question", "What colour is the block?")
            page.click("#answer-button")
            expect(page.locator("#answer")).to_be_visible()
            expect(page.locator("#answer-status")).to_contain_text("Answered from 3 pages")
            assert page.locator("#answer-pages .hit").count() >= 1
            expect(page.locator("#answer-pages .hit").first.locator("figcaption")).to_contain_text("[")
            assert errors == []
        finally:
            browser.close()


# the page as a person sees it: the favicon, the key field, thumbnails while they load, /docs offline
PLACEHOLDER_FITS = """() => {
  // lay the placeholder out as the field's text (a text field: a password shows dots) and compare the
  // width it needs with the width the field shows; then put the field back as it was
  const input = document.getElementById("api-key");
  const [type, value] = [input.type, input.value];
  input.type = "text";
  input.value = input.placeholder;
  const size = { needed: input.scrollWidth, shown: input.clientWidth };
  input.type = type;
  input.value = value;
  return size;
}"""


def test_favicon_key_placeholder_thumbnails_and_offline_docs(dse_col: Built) -> None:
    from playwright.sync_api import expect, sync_playwright

    app = create_app(dse_col.directory, device="cpu", encoder=dse_col.encoder, api_key=KEY)
    with live_server(app) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"), headless=True, args=list(CHROMIUM_ARGS))
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(60_000)
            errors: list[str] = []
            failed: list[str] = []
            external: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)

            def local_only(route) -> None:  # nothing may come from outside the server (works offline)
                if route.request.url.startswith(url):
                    route.continue_()
                else:
                    external.append(route.request.url)
                    route.abort()

            page.route("**/*", local_only)

            # the favicon the page links to is served (no 404 in the console)
            page.goto(url + f"/?key={KEY}")
            expect(page.locator("#info")).to_contain_text("5 pages")
            # (headless Chromium does not fetch favicons itself: fetch the one the page links to)
            href = page.evaluate("document.querySelector('link[rel=icon]').href")
            icon = page.request.get(href)
            assert href == url + "/favicon.ico" and icon.status == 200 and len(icon.body()) > 0
            assert icon.headers["content-type"] in ("image/x-icon", "image/vnd.microsoft.icon")

            # the API-key placeholder is not cut off, on a desktop and on a phone-sized window
            page.fill("#api-key", "")
            for width in (1280, 390):
                page.set_viewport_size({"width": width, "height": 800})
                fit = page.evaluate(PLACEHOLDER_FITS)
                assert fit["needed"] <= fit["shown"], (width, fit)

            # thumbnails: while their images are still on the way, no alt text shows in their place
            page.set_viewport_size({"width": 1280, "height": 800})
            held = []
            page.route("**/pages/*/image?width=*", lambda route: held.append(route))
            page.fill("#query", "red block")
            page.press("#query", "Enter")
            thumbs = page.locator("#results .hit img.thumb")
            expect(thumbs).to_have_count(5)
            page.wait_for_function("() => document.querySelectorAll('#results .hit').length === 5")
            page.wait_for_timeout(300)  # the thumbnails stay held: what shows meanwhile is what a slow network shows
            assert held, "the thumbnail requests were not held"
            states = thumbs.evaluate_all(
                "imgs => imgs.map(i => [i.getAttribute('src'), i.alt, getComputedStyle(i).visibility])"
            )
            assert all(src is None and alt and vis == "hidden" for src, alt, vis in states), states
            expect(page.locator("#results .hit figcaption").first).to_be_visible()  # the card itself is there
            page.unroute("**/pages/*/image?width=*")
            for route in held:
                route.continue_()
            page.wait_for_function(
                "() => [...document.querySelectorAll('#results .hit img.thumb')]"
                ".every(i => i.naturalWidth > 0 && getComputedStyle(i).visibility === 'visible')"
            )

            # /docs works offline: rendered from local files only
            page.goto(url + "/docs")
            page.wait_for_function(
                "() => document.querySelectorAll('.op, .opblock').length >= 5"  # built-in page or Swagger UI
            )
            assert "/search" in page.inner_text("body")
            assert external == [], external
            assert failed == [], failed
            assert errors == [], errors
        finally:
            browser.close()
