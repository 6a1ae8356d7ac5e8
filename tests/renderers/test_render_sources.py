"""Expanding inputs into sources, content detection, settings and page selection."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from PIL import Image
from support.docs import make_pdf

from renderers import (
    PageRecord,
    PageSelection,
    RenderFailure,
    RenderSettings,
    SettingsError,
    Source,
    iter_sources,
    make_doc_id,
    render,
    render_source,
)
from renderers.detect import sniff_bytes


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "docs"
    (root / "b" / "deep").mkdir(parents=True)
    (root / ".hidden").mkdir()
    make_pdf(root / "a.pdf", n_pages=1)
    make_pdf(root / "b" / "deep" / "c.pdf", n_pages=1)
    Image.new("RGB", (10, 10)).save(root / "b" / "img.png")
    (root / "b" / "page.html").write_text("<html><title>x</title></html>")
    (root / "b" / "slides.pptx").write_bytes(b"")
    (root / "notes.txt").write_text("skipped: unsupported extension")
    (root / ".secret.pdf").write_bytes(b"%PDF-1.4")
    make_pdf(root / ".hidden" / "h.pdf", n_pages=1)
    return root


def test_directories_are_walked_recursively_in_order(tree):
    found = list(iter_sources([tree]))
    rel = [Path(s.source).relative_to(tree.resolve()).as_posix() for s in found]
    assert rel == ["a.pdf", "b/img.png", "b/page.html", "b/slides.pptx", "b/deep/c.pdf"]
    kinds = [s.kind for s in found]
    assert kinds == ["pdf", "image", "web", "office", "pdf"]
    for s in found:
        assert s.error is None and s.path is not None and s.url is None
        assert s.doc_id == make_doc_id(str(s.path)) == make_doc_id(s.source)


def test_globs_urls_duplicates_and_missing_inputs(tree, monkeypatch):
    monkeypatch.chdir(tree)
    found = list(
        iter_sources(
            [
                "**/*.pdf",
                "a.pdf",
                str(tree / "a.pdf"),
                "https://example.org/page?q=1",
                "missing.pdf",
                "nothing-*.png",
                "ftp://example.org/file.pdf",
            ]
        )
    )
    assert [Path(s.source).name for s in found[:2]] == ["a.pdf", "c.pdf"]  # a.pdf not repeated
    url = found[2]
    assert url.kind == "web" and url.url == url.source == "https://example.org/page?q=1" and url.content_hash() is None
    assert url.doc_id == make_doc_id("https://example.org/page?q=1")
    missing, glob_none, ftp = found[3:]
    assert missing.error and "no such file" in missing.error
    assert glob_none.error and "no files match" in glob_none.error
    assert ftp.error and "unsupported URL scheme 'ftp'" in ftp.error
    assert len(found) == 6


def test_doc_ids_are_stable_and_content_hash_tracks_bytes(tree, monkeypatch):
    monkeypatch.chdir(tree)
    rel = next(iter_sources(["a.pdf"]))
    absolute = next(iter_sources([tree / "a.pdf"]))
    os.symlink(tree / "a.pdf", tree / "link.pdf")
    via_link = next(iter_sources(["link.pdf"]))
    assert rel.doc_id == absolute.doc_id == via_link.doc_id and len(rel.doc_id) == 16
    data = (tree / "a.pdf").read_bytes()
    assert rel.content_hash() == hashlib.sha256(data).hexdigest()
    (tree / "a.pdf").write_bytes(data + b"\n% appended\n")
    assert rel.content_hash() == hashlib.sha256(data + b"\n% appended\n").hexdigest()
    assert rel.doc_id == next(iter_sources(["a.pdf"])).doc_id  # id is the location, not the content


def test_unknown_extensions_are_classified_by_content(tmp_path):
    make_pdf(tmp_path / "report.dat", n_pages=1)
    (tmp_path / "notes.xyz").write_text("plain words")
    recs = list(render([tmp_path / "report.dat", tmp_path / "notes.xyz"], RenderSettings(dpi=20)))
    assert isinstance(recs[0], PageRecord) and recs[0].source.endswith("report.dat")
    assert isinstance(recs[1], RenderFailure) and recs[1].error_type == "UnsupportedFormatError"
    assert recs[1].reason == "unsupported file type '.xyz' (looks like plain text)"


def test_unresolved_inputs_become_failures(tmp_path):
    recs = list(render([tmp_path / "nope.pdf", "ftp://example.org/x.pdf", str(tmp_path / "zz*.png")]))
    assert [r.error_type for r in recs] == ["SourceNotFoundError", "UnsupportedFormatError", "SourceNotFoundError"]
    assert all(isinstance(r, RenderFailure) for r in recs)


def test_render_source_renders_one_source(tmp_path):
    info = make_pdf(tmp_path / "one.pdf", n_pages=2)
    src = Source.from_path(info.path)
    recs = list(render_source(src, RenderSettings(dpi=20)))
    assert [r.page for r in recs] == [1, 2] and all(r.doc_id == src.doc_id for r in recs)
    assert [r.page for r in render_source(info.path, RenderSettings(dpi=20, pages="2"))] == [2]


@pytest.mark.parametrize(
    ("head", "label"),
    [
        (b"%PDF-1.7\n", "pdf"),
        (b"\x89PNG\r\n\x1a\n....", "png"),
        (b"\xff\xd8\xff\xe0", "jpeg"),
        (b"GIF89a..", "gif"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "webp"),
        (b"II*\x00", "tiff"),
        (b"PK\x03\x04", "zip"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "ole2"),
        (b"{\\rtf1\\ansi", "rtf"),
        (b"\xef\xbb\xbf<!DOCTYPE html><html>", "html"),
        (b"hello world", "text"),
        (b"\x00\x01\x02", "binary"),
        (b"", "empty"),
    ],
)
def test_sniffing(head, label):
    assert sniff_bytes(head) == label


def test_page_selection_and_settings_validation():
    sel = PageSelection.parse("1-3, 7, 10-")
    assert sel.select(12) == [1, 2, 3, 7, 10, 11, 12] and 7 in sel and 8 not in sel
    for bad in ["", "0", "3-1", "a-b", "1-2-3", "1,,2", "-"]:
        with pytest.raises(SettingsError):
            PageSelection.parse(bad)
    for kwargs in [
        {"dpi": 0},
        {"dpi": -5},
        {"max_pixels": 10},
        {"pages": "x"},
        {"pdf_backend": "mupdf"},
        {"web_mode": "huge"},
        {"office_workers": 0},
        {"web_timeout": 0},
        {"png_compress_level": 12},
    ]:
        with pytest.raises(SettingsError):
            RenderSettings(**kwargs)
    d = RenderSettings(password="hunter2").to_dict()
    assert "password" not in d and "hunter2" not in repr(RenderSettings(password="hunter2"))


@pytest.mark.timeout(30)
def test_special_files_are_rejected_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    os.mkfifo(tmp_path / "pipe.pdf")
    recs = list(render([tmp_path / "pipe", tmp_path / "pipe.pdf"]))
    assert [r.error_type for r in recs] == ["UnsupportedFormatError", "UnsupportedFormatError"]
    assert all("not a regular file" in r.reason for r in recs)


def test_directory_walks_report_skipped_unsupported_files(tree):
    """Unsupported files met in a directory are reported to the caller (hidden ones are not);
    a file given explicitly is a source whatever its type (rendering reports it)."""
    skipped: list[Path] = []
    found = list(iter_sources([tree], skipped=skipped))
    assert len(found) == 5
    assert [p.relative_to(tree).as_posix() for p in skipped] == ["notes.txt"]
    skipped.clear()
    explicit = list(iter_sources([tree / "notes.txt"], skipped=skipped))
    assert len(explicit) == 1 and skipped == []
    assert list(iter_sources([tree])) == found  # the argument is optional
