"""PDF rendering: content at the right place, page ranges, DPI vs pixel budget,
backends, the process pool, encryption and damaged files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.docs import (
    box_to_pixels,
    color_close,
    dark_fraction,
    fraction_near,
    make_pdf,
    mean_color,
    page_color,
)

import renderers.pdf as pdf_mod
from renderers import (
    PageRecord,
    RenderFailure,
    RenderSettings,
    make_doc_id,
    render,
)


def _pages(records) -> list[PageRecord]:
    assert all(isinstance(r, PageRecord) for r in records), [r for r in records if isinstance(r, RenderFailure)]
    return records


def _only_failure(records) -> RenderFailure:
    assert len(records) == 1 and isinstance(records[0], RenderFailure), records
    return records[0]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> object:
    return make_pdf(tmp_path_factory.mktemp("pdf") / "report.pdf", n_pages=3)


def test_pages_text_chart_table_at_default_dpi(report):
    recs = _pages(list(render([report.path])))
    assert [r.page for r in recs] == [1, 2, 3]
    w_pt, h_pt = report.page_size
    for rec in recs:
        assert rec.size == (math.ceil(w_pt * 2), math.ceil(h_pt * 2)) == rec.image.size  # 144 dpi = 2 px/pt
        assert rec.image.mode == "RGB"
        assert rec.title == "Quarterly Retrieval Report"
        assert rec.source == str(report.path.resolve())
        assert rec.doc_id == make_doc_id(str(report.path.resolve())) and len(rec.doc_id) == 16
        assert rec.settings["dpi"] == 144 and rec.settings["backend"] == "pdfium"
        img, (W, H) = rec.image, rec.size
        # The page's marker block carries the page's own colour (page order is right).
        assert color_close(mean_color(img, box_to_pixels(report.marker_box, W, H)), page_color(rec.page), 8)
        # Body text is ink on white: a few percent dark pixels, not a blank or black box.
        assert 0.02 < dark_fraction(img, box_to_pixels(report.text_box, W, H, inset=0.02)) < 0.4
        # Every data series of the bar chart is drawn inside the chart area.
        chart = box_to_pixels(report.chart_box, W, H, inset=0.0)
        for color in report.chart_colors:
            assert fraction_near(img, chart, color, 12) > 0.02, color
        # The table header row is filled; the body has ruled lines and text.
        assert fraction_near(img, box_to_pixels(report.table_header_box, W, H), report.table_header_color, 12) > 0.7
        assert 0.01 < dark_fraction(img, box_to_pixels(report.table_box, W, H, inset=0.0)) < 0.5
        # The page's left margin stays white.
        assert fraction_near(img, (0, 0, int(0.08 * W), H), (255, 255, 255), 3) > 0.97


def test_render_is_lazy_page_by_page(tmp_path, monkeypatch):
    info = make_pdf(tmp_path / "long.pdf", n_pages=12)
    calls = []
    real = pdf_mod._render_pdfium_page
    monkeypatch.setattr(pdf_mod, "_render_pdfium_page", lambda *a: calls.append(a[1]) or real(*a))
    gen = render([info.path], RenderSettings(dpi=30, pdf_workers=1))
    first = next(gen)
    assert first.page == 1 and calls == [0]  # nothing rendered ahead
    second = next(gen)
    assert second.page == 2 and calls == [0, 1]
    gen.close()


@pytest.mark.parametrize(
    ("selection", "expected"),
    [("2-3,6", [2, 3, 6]), ("6-", [6, 7]), ("-2", [1, 2]), ("7,1,1-1", [1, 7]), ("5-99", [5, 6, 7])],
)
def test_page_ranges(tmp_path, selection, expected):
    info = make_pdf(tmp_path / "seven.pdf", n_pages=7)
    recs = _pages(list(render([info.path], RenderSettings(dpi=36, pages=selection))))
    assert [r.page for r in recs] == expected
    for r in recs:  # the rendered image really is that page
        box = box_to_pixels(info.marker_box, r.width, r.height)
        assert color_close(mean_color(r.image, box), page_color(r.page), 10)


def test_page_range_outside_document_is_a_failure(tmp_path):
    info = make_pdf(tmp_path / "two.pdf", n_pages=2)
    fail = _only_failure(list(render([info.path], RenderSettings(pages="5-6"))))
    assert fail.error_type == "NoPagesError" and "2 pages" in fail.reason


def test_dpi_versus_pixel_budget(tmp_path):
    info = make_pdf(tmp_path / "one.pdf", n_pages=1, page_size=(612, 792))
    at72 = _pages(list(render([info.path], RenderSettings(dpi=72))))[0]
    assert at72.size == (612, 792)
    budget = 400_000
    fit = _pages(list(render([info.path], RenderSettings(max_pixels=budget))))[0]
    w, h = fit.size
    assert w * h <= budget and w * h > 0.99 * budget  # uses the budget, stays under it
    assert abs(w / h - 612 / 792) < 0.005
    assert fit.settings["max_pixels"] == budget and fit.settings["dpi"] == pytest.approx(72 * w / 612, rel=0.01)
    # Both given: the lower resolution wins.
    both = _pages(list(render([info.path], RenderSettings(dpi=72, max_pixels=10_000_000))))[0]
    assert both.size == (612, 792)
    capped = _pages(list(render([info.path], RenderSettings(dpi=300, max_pixels=budget))))[0]
    assert capped.size == fit.size
    # The content scales with the page: the marker is still where it should be.
    assert color_close(mean_color(fit.image, box_to_pixels(info.marker_box, w, h)), page_color(1), 10)


def test_pdf2image_backend_agrees_with_pdfium(tmp_path):
    from reportlab.pdfgen import canvas

    info = make_pdf(tmp_path / "doc.pdf", n_pages=2)
    rotated = tmp_path / "rotated.pdf"
    c = canvas.Canvas(str(rotated), pagesize=(400, 300))
    c.setFillColorRGB(1, 0, 0)
    c.rect(0, 150, 200, 150, stroke=0, fill=1)  # top-left quarter, before rotation
    c.setPageRotation(90)
    c.showPage()
    c.save()
    for settings in (RenderSettings(dpi=100), RenderSettings(max_pixels=300_000)):
        a = _pages(list(render([info.path, rotated], settings)))
        other = RenderSettings(**{**settings.__dict__, "pdf_backend": "pdf2image"})
        b = _pages(list(render([info.path, rotated], other)))
        assert [(r.source, r.page) for r in a] == [(r.source, r.page) for r in b]
        for ra, rb in zip(a, b, strict=True):
            assert ra.size == rb.size == rb.image.size
            assert rb.settings["backend"] == "pdf2image" and rb.title == ra.title
            diff = np.abs(np.asarray(ra.image, np.int16) - np.asarray(rb.image, np.int16))
            assert diff.mean() < 6, f"backends disagree on {ra.source} p{ra.page}: mean |diff| {diff.mean():.1f}"
    # Rotation is applied: reportlab stores a portrait 300x400 MediaBox with /Rotate 90,
    # which displays as landscape 400x300; the block drawn at x 0-200, y 150-300 (pt, from
    # the bottom-left of the unrotated page) turns clockwise to x 150-300, y 0-200.
    assert b"/MediaBox [ 0 0 300 400 ]" in rotated.read_bytes() and b"/Rotate 90" in rotated.read_bytes()
    for backend in ("pdfium", "pdf2image"):
        rot = _pages(list(render([rotated], RenderSettings(dpi=72, pdf_backend=backend))))[0]
        assert rot.size == (400, 300)
        assert color_close(mean_color(rot.image, (165, 10, 285, 185)), (255, 0, 0), 5)
        assert color_close(mean_color(rot.image, (10, 10, 135, 290)), (255, 255, 255), 5)
        assert color_close(mean_color(rot.image, (315, 10, 390, 290)), (255, 255, 255), 5)
        assert color_close(mean_color(rot.image, (165, 215, 285, 290)), (255, 255, 255), 5)


def test_process_pool_matches_in_process(tmp_path):
    info = make_pdf(tmp_path / "ten.pdf", n_pages=10)
    serial = _pages(list(render([info.path], RenderSettings(dpi=40, pdf_workers=1))))
    pooled = _pages(list(render([info.path], RenderSettings(dpi=40, pdf_workers=2, pdf_parallel_min_pages=2))))
    assert [r.page for r in pooled] == list(range(1, 11))
    assert any(r._png is not None for r in pooled)  # really went through the worker processes
    for a, b in zip(serial, pooled, strict=True):
        assert a.size == b.size and a.settings == b.settings and a.title == b.title
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))


@pytest.mark.parametrize("backend", ["pdfium", "pdf2image"])
def test_encrypted_pdf(tmp_path, backend):
    info = make_pdf(tmp_path / "secret.pdf", n_pages=2, password="s3cret")
    missing = _only_failure(list(render([info.path], RenderSettings(pdf_backend=backend))))
    assert missing.error_type == "EncryptedDocumentError" and "password is required" in missing.reason
    wrong = _only_failure(list(render([info.path], RenderSettings(pdf_backend=backend, password="nope"))))
    assert wrong.error_type == "EncryptedDocumentError" and "wrong password" in wrong.reason
    ok = _pages(list(render([info.path], RenderSettings(pdf_backend=backend, password="s3cret", dpi=50))))
    assert [r.page for r in ok] == [1, 2]
    for r in ok:
        box = box_to_pixels(info.marker_box, r.width, r.height)
        assert color_close(mean_color(r.image, box), page_color(r.page), 10)


def _bad_pdfs(tmp: Path) -> dict[str, tuple[Path, str, str]]:
    from reportlab.pdfgen import canvas

    good = make_pdf(tmp / "good.pdf", n_pages=2).path.read_bytes()
    cases = {}
    p = tmp / "truncated.pdf"
    p.write_bytes(good[: len(good) // 2])
    cases["truncated"] = (p, "TruncatedDocumentError", "truncated PDF")
    p = tmp / "corrupt.pdf"
    p.write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 40 + b"\n%%EOF\n")
    cases["corrupt"] = (p, "CorruptDocumentError", "corrupt PDF")
    p = tmp / "empty.pdf"
    p.write_bytes(b"")
    cases["empty"] = (p, "EmptyFileError", "empty file")
    p = tmp / "nopages.pdf"
    canvas.Canvas(str(p)).save()
    cases["no pages"] = (p, "NoPagesError", "no pages")
    p = tmp / "image.pdf"
    Image.new("RGB", (10, 10)).save(p, format="PNG")
    cases["png"] = (p, "FormatMismatchError", "not a PDF file (looks like a PNG image)")
    p = tmp / "notes.pdf"
    p.write_text("just some notes, not a PDF\n")
    cases["text"] = (p, "FormatMismatchError", "not a PDF file (looks like plain text)")
    return cases


@pytest.mark.parametrize("backend", ["pdfium", "pdf2image"])
def test_bad_pdfs_fail_with_specific_reasons_and_the_job_goes_on(tmp_path, backend):
    cases = _bad_pdfs(tmp_path)
    good = make_pdf(tmp_path / "after.pdf", n_pages=2)
    inputs = [path for path, _, _ in cases.values()] + [good.path]
    recs = list(render(inputs, RenderSettings(dpi=30, pdf_backend=backend)))
    failures = {Path(r.source).name: r for r in recs if isinstance(r, RenderFailure)}
    assert len(failures) == len(cases)
    for name, (path, error_type, text) in cases.items():
        fail = failures[path.name]
        assert fail.error_type == error_type, (name, fail)
        assert text in fail.reason, (name, fail.reason)
        assert fail.doc_id == make_doc_id(str(path.resolve()))
    pages = [r for r in recs if isinstance(r, PageRecord)]
    assert [(Path(r.source).name, r.page) for r in pages] == [("after.pdf", 1), ("after.pdf", 2)]
