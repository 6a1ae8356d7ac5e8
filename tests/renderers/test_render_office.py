"""Office documents through LibreOffice: slides as pages, a Word document, broken
files, the per-conversion timeout (process group killed) and a missing LibreOffice.

LibreOffice conversions take a few seconds each, so the real ones are batched."""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
from pathlib import Path

import pytest
from support.docs import (
    box_to_pixels,
    color_close,
    dark_fraction,
    fraction_near,
    make_docx,
    make_pdf,
    make_pptx,
    mean_color,
)

from renderers import PageRecord, RenderFailure, RenderSettings, render

pytestmark = pytest.mark.office

needs_soffice = pytest.mark.skipif(
    not (os.environ.get("DSE_SOFFICE") or shutil.which("soffice") or shutil.which("libreoffice")),
    reason="LibreOffice is not installed",
)


def _rewrite_zip(src: Path, dst: Path, replace: dict[str, bytes | None]) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            data = replace.get(item.filename, zin.read(item.filename))
            if data is not None:
                zout.writestr(item, data)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """One job, two parallel LibreOffice workers: a deck, a Word document and a
    pptx whose XML is garbage (valid ZIP, so only LibreOffice can notice)."""
    root = tmp_path_factory.mktemp("office")
    deck = make_pptx(root / "deck.pptx", n_slides=3)
    doc = make_docx(root / "notes.docx")
    garbled = root / "garbled.pptx"
    _rewrite_zip(deck.path, garbled, {"ppt/presentation.xml": b"<<< not xml"})
    records = list(render([deck.path, doc.path, garbled], RenderSettings(dpi=60, office_workers=2)))
    return {"deck": deck, "doc": doc, "garbled": garbled, "records": records}


@needs_soffice
def test_each_slide_becomes_a_page(converted):
    deck = converted["deck"]
    slides = [r for r in converted["records"] if r.source == str(deck.path.resolve())]
    assert [r.page for r in slides] == [1, 2, 3]
    for rec in slides:
        assert isinstance(rec, PageRecord)
        assert abs(rec.width / rec.height - deck.aspect) < 0.01
        assert rec.settings["kind"] == "office" and rec.settings["converter"] == "libreoffice"
        assert rec.settings["dpi"] == 60
        assert rec.title == deck.titles[rec.page - 1]  # slide title, not the file name
        W, H = rec.size
        # The slide's own coloured rectangle is where it was placed...
        assert color_close(mean_color(rec.image, box_to_pixels(deck.shape_box, W, H)), deck.colors[rec.page - 1], 6)
        # ...the title text is dark ink in the top band, and the right edge is white.
        assert dark_fraction(rec.image, (0, 0, W, int(0.2 * H))) > 0.005
        assert fraction_near(rec.image, (int(0.93 * W), 0, W, H), (255, 255, 255), 3) > 0.98


@needs_soffice
def test_word_document(converted):
    doc = converted["doc"]
    pages = [r for r in converted["records"] if r.source == str(doc.path.resolve())]
    assert pages and all(isinstance(r, PageRecord) for r in pages)
    first = pages[0]
    assert first.title == doc.title
    W, H = first.size
    assert abs(W / H - 8.5 / 11) < 0.02  # US Letter, python-docx's default
    assert dark_fraction(first.image, (0, int(0.05 * H), W, int(0.35 * H))) > 0.01  # heading + paragraphs
    assert any(fraction_near(p.image, (0, 0, p.width, p.height), doc.picture_color, 12) > 0.02 for p in pages)


@needs_soffice
def test_unloadable_office_file_is_a_conversion_failure(converted):
    fails = [r for r in converted["records"] if r.source == str(converted["garbled"].resolve())]
    assert len(fails) == 1 and isinstance(fails[0], RenderFailure)
    assert fails[0].error_type == "ConversionError" and "could not" in fails[0].reason


@needs_soffice
def test_slide_page_range(tmp_path):
    deck = make_pptx(tmp_path / "deck.pptx", n_slides=3)
    recs = list(render([deck.path], RenderSettings(dpi=40, pages="2")))
    assert [r.page for r in recs] == [2]
    W, H = recs[0].size
    assert color_close(mean_color(recs[0].image, box_to_pixels(deck.shape_box, W, H)), deck.colors[1], 6)
    assert recs[0].title == deck.titles[1]


def test_broken_office_files_fail_before_conversion(tmp_path):
    deck = make_pptx(tmp_path / "src.pptx", n_slides=1)
    data = deck.path.read_bytes()
    (tmp_path / "truncated.pptx").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.pptx").write_text("not a presentation\n")
    (tmp_path / "empty.docx").write_bytes(b"")
    doc = make_docx(tmp_path / "word.docx")
    shutil.copy(doc.path, tmp_path / "word_named.pptx")
    _rewrite_zip(deck.path, tmp_path / "no_types.pptx", {"[Content_Types].xml": None})
    (tmp_path / "legacy.ppt").write_bytes(b"%PDF-1.4 not an OLE2 file")
    with zipfile.ZipFile(tmp_path / "book.odt", "w") as zf:  # an EPUB named .odt
        zf.writestr("mimetype", "application/epub+zip")
        zf.writestr("META-INF/container.xml", "<container/>")
    pdf = make_pdf(tmp_path / "after.pdf", n_pages=1)
    expected = {
        "truncated.pptx": ("CorruptDocumentError", "broken .pptx file: not a valid ZIP archive"),
        "text.pptx": ("FormatMismatchError", "not a PowerPoint (.pptx) file (looks like plain text)"),
        "empty.docx": ("EmptyFileError", "empty file"),
        "no_types.pptx": ("CorruptDocumentError", "missing [Content_Types].xml"),
        "legacy.ppt": ("FormatMismatchError", "not a PowerPoint (.ppt) file (looks like a PDF document)"),
        "book.odt": ("FormatMismatchError", "not an OpenDocument text (mimetype is 'application/epub+zip')"),
        # LibreOffice picks its importer by content: a Word document named .pptx is converted
        # (here it reaches the converter, which is missing)
        "word_named.pptx": ("BackendUnavailableError", "LibreOffice executable not found"),
    }
    inputs = [tmp_path / n for n in expected] + [pdf.path]
    # An unusable soffice proves none but the last of these reached LibreOffice.
    recs = list(render(inputs, RenderSettings(soffice="/nonexistent/soffice", dpi=30)))
    by = {Path(r.source).name: r for r in recs}
    for name, (error_type, text) in expected.items():
        assert isinstance(by[name], RenderFailure) and by[name].error_type == error_type, by[name]
        assert text in by[name].reason, by[name].reason
    assert isinstance(by["after.pdf"], PageRecord)


# ------------------------------------------------------------ templates, mislabelled office files

#: Where Debian's LibreOffice packages (libreoffice-common) install their templates.
TEMPLATE_DIRS = (Path("/usr/lib/libreoffice/share/template"), Path("/usr/share/libreoffice/share/template"))


def _small_template(ext: str) -> Path | None:
    """The smallest template with ``ext``, preferring real documents to the style-only ones (blank pages)."""
    found = sorted(
        (p for d in TEMPLATE_DIRS if d.is_dir() for p in d.rglob(f"*{ext}")),
        key=lambda p: ("styles" in p.parts, p.stat().st_size, p),
    )
    return found[0] if found else None


#: template extension -> the document extension a user might save it under
TEMPLATE_AS = {".otp": ".odp", ".ott": ".odt", ".ots": ".ods"}
#: scripts/setup.sh installs LibreOffice Calc; where it is missing, spreadsheets fail with a hint instead
CALC_INSTALLED = any(Path(p).exists() for p in ("/usr/lib/libreoffice/program/libsclo.so",))


@pytest.fixture(scope="module")
def office_variants(tmp_path_factory):
    """Real LibreOffice templates copied under their own extension and the document one, plus
    office files of one kind named as another (all of which LibreOffice converts)."""
    root = tmp_path_factory.mktemp("variants")
    files: dict[str, Path] = {}
    for ext, as_ext in TEMPLATE_AS.items():
        tpl = _small_template(ext)
        if tpl is None:
            continue
        for name in (f"template{ext}", f"template_{ext[1:]}{as_ext}"):
            files[name] = Path(shutil.copy(tpl, root / name))
    if not files:
        pytest.skip("no LibreOffice templates installed (Debian package libreoffice-common)")
    doc = make_docx(root / "src.docx")
    deck = make_pptx(root / "src.pptx", n_slides=2)
    files["docx_named.doc"] = Path(shutil.copy(doc.path, root / "docx_named.doc"))
    files["word_named.pptx"] = Path(shutil.copy(doc.path, root / "word_named.pptx"))
    files["pptx_named.ppt"] = Path(shutil.copy(deck.path, root / "pptx_named.ppt"))
    (root / "export.xls").write_text("<html><body><table><tr><td>region</td><td>42</td></tr></table></body></html>")
    files["export.xls"] = root / "export.xls"
    if "template.otp" in files:
        _rewrite_zip(files["template.otp"], root / "no_mimetype.odp", {"mimetype": None})
        files["no_mimetype.odp"] = root / "no_mimetype.odp"
    return files


def test_templates_and_mislabelled_office_files_pass_the_checks(office_variants):
    from renderers.detect import KIND_BY_EXT, check_content
    from renderers.office import slide_titles

    for ext in TEMPLATE_AS:
        assert KIND_BY_EXT[ext] == "office"
    for name, path in office_variants.items():
        if name.startswith("template"):
            with zipfile.ZipFile(path) as zf:  # a real template: the mimetype that used to be refused
                assert zf.read("mimetype").decode().startswith("application/vnd.oasis.opendocument.")
                assert zf.read("mimetype").decode().endswith("-template")
        assert check_content(path, "office") == ("html" if name == "export.xls" else "zip"), name
    for name in ("template.otp", "template_otp.odp", "no_mimetype.odp"):
        if name in office_variants:  # read as a presentation, whatever the extension says
            titles = slide_titles(office_variants[name])
            assert isinstance(titles, list) and titles, name
    assert slide_titles(office_variants["pptx_named.ppt"]) == ["Slide 1 results overview", "Slide 2 results overview"]
    assert slide_titles(office_variants["word_named.pptx"]) is None


@needs_soffice
def test_templates_and_mislabelled_office_files_render(office_variants):
    """Everything LibreOffice converts is rendered: a template gives the same pages under either
    extension. Spreadsheets need LibreOffice Calc; without it the failure says so (and comes from
    the conversion, not from a check of ours)."""
    recs = list(render(list(office_variants.values()), RenderSettings(dpi=30, office_workers=2)))
    by: dict[str, list] = {}
    for rec in recs:
        by.setdefault(Path(rec.source).name, []).append(rec)
    assert set(by) == set(office_variants)
    for name, got in by.items():
        failures = [r for r in got if isinstance(r, RenderFailure)]
        if failures and name.endswith((".ots", ".ods")) and not CALC_INSTALLED:
            assert failures[0].error_type == "ConversionError", failures[0]
            assert "Calc" in failures[0].reason, failures[0].reason
            continue
        assert not failures, (name, failures)
        for rec in got:
            assert rec.settings["kind"] == "office" and rec.settings["converter"] == "libreoffice"
            if not name.endswith((".ots", ".ods")):  # the spreadsheet templates are style sheets
                assert fraction_near(rec.image, (0, 0, *rec.size), (255, 255, 255), 3) < 1.0, name  # not blank
    for ext, as_ext in TEMPLATE_AS.items():
        own, other = by.get(f"template{ext}"), by.get(f"template_{ext[1:]}{as_ext}")
        if own and isinstance(own[0], PageRecord):
            assert [r.page for r in own] == [r.page for r in other] and [r.size for r in own] == [r.size for r in other]


def test_missing_libreoffice_is_a_clear_failure(tmp_path):
    deck = make_pptx(tmp_path / "deck.pptx", n_slides=1)
    (rec,) = list(render([deck.path], RenderSettings(soffice="/nonexistent/soffice")))
    assert isinstance(rec, RenderFailure) and rec.error_type == "BackendUnavailableError"
    assert "LibreOffice executable not found" in rec.reason


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in fh)
    except FileNotFoundError:
        return False


def test_conversion_timeout_kills_the_process_group(tmp_path):
    """A stand-in 'soffice' that hangs (and has a child) must be killed, group and all."""
    pids = tmp_path / "pids"
    fake = tmp_path / "fake-soffice"
    fake.write_text(f"#!/bin/sh\nsleep 300 &\necho $$ $! > {pids}\nwait\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    deck = make_pptx(tmp_path / "deck.pptx", n_slides=1)
    pdf = make_pdf(tmp_path / "after.pdf", n_pages=1)
    recs = list(render([deck.path, pdf.path], RenderSettings(soffice=str(fake), office_timeout=1.5, dpi=30)))
    fail, page = recs
    assert isinstance(fail, RenderFailure) and fail.error_type == "RenderTimeoutError"
    assert "timed out after 1.5s" in fail.reason
    assert isinstance(page, PageRecord)
    shell_pid, child_pid = map(int, pids.read_text().split())
    assert not _alive(shell_pid) and not _alive(child_pid)


def test_parallel_conversions_use_separate_profiles(tmp_path):
    """N workers convert concurrently, never sharing a LibreOffice profile at the same time.

    A stand-in 'soffice' logs its profile and start/end times, waits, and 'converts' by
    copying a real PDF to the expected output name.
    """
    sample = make_pdf(tmp_path / "sample.pdf", n_pages=2)
    log = tmp_path / "calls.log"
    fake = tmp_path / "fake-soffice"
    fake.write_text(f"""#!/bin/sh
profile=""; outdir=""; input=""
for a in "$@"; do case "$a" in -env:UserInstallation=*) profile="${{a#*=}}";; esac; done
while [ $# -gt 0 ]; do
  if [ "$1" = "--outdir" ]; then outdir="$2"; shift; fi
  input="$1"; shift
done
echo "start $$ $profile $(date +%s.%N)" >> {log}
sleep 0.6
name=$(basename "$input")
cp {sample.path} "$outdir/${{name%.*}}.pdf"
echo "end $$ $profile $(date +%s.%N)" >> {log}
""")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    decks = [make_pptx(tmp_path / f"d{i}.pptx", n_slides=1).path for i in range(5)]
    recs = list(render(decks, RenderSettings(soffice=str(fake), office_workers=2, dpi=30)))
    assert [(Path(r.source).name, r.page) for r in recs] == [(d.name, p) for d in decks for p in (1, 2)]
    for r in recs:  # the pages really come from the converted PDF
        box = box_to_pixels(sample.marker_box, r.width, r.height)
        assert color_close(mean_color(r.image, box), sample.marker_colors[r.page - 1], 10)
    calls: dict[str, dict] = {}
    for line in log.read_text().split("\n"):
        if line:
            kind, pid, profile, t = line.split()
            calls.setdefault(pid, {"profile": profile})[kind] = float(t)
    assert len(calls) == 5
    spans = list(calls.values())
    overlapping = [
        (a, b) for i, a in enumerate(spans) for b in spans[i + 1 :] if a["start"] < b["end"] and b["start"] < a["end"]
    ]
    assert overlapping, "conversions never ran in parallel"
    assert all(a["profile"] != b["profile"] for a, b in overlapping)
    assert max(sum(s["start"] <= t["start"] < s["end"] for s in spans) for t in spans) <= 2
    assert len({s["profile"] for s in spans}) == 2  # profiles are reused by their worker


def test_closing_the_converter_kills_running_conversions(tmp_path):
    import time

    from renderers.errors import RenderError
    from renderers.office import OfficeConverter

    pids = tmp_path / "pids"
    fake = tmp_path / "fake-soffice"
    fake.write_text(f"#!/bin/sh\nsleep 300 &\necho $$ $! > {pids}.tmp && mv {pids}.tmp {pids}\nwait\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    deck = make_pptx(tmp_path / "deck.pptx", n_slides=1)
    conv = OfficeConverter(workers=1, timeout=300, soffice=str(fake))
    fut = conv.submit(deck.path)
    for _ in range(500):  # wait (up to ~10 s) until the stand-in has started
        if pids.exists():
            break
        time.sleep(0.02)
    shell_pid, child_pid = map(int, pids.read_text().split())
    conv.close()  # must not wait 300 s
    assert fut.done()
    with pytest.raises(RenderError):
        fut.result()
    assert not _alive(shell_pid) and not _alive(child_pid)
