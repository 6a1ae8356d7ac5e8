"""The web page in a real browser: Playwright (python) drives Debian's Chromium against a real uvicorn
server over a tiny colqwen2 collection with an API key and a tiny answer generator: the key from
``?key=``, a text search, the page viewer with a similarity map, a drag-and-dropped image query,
and answer mode."""

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
