"""``dse render``: files written, pages.jsonl, summary line and exit codes 0/1/2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from support.docs import box_to_pixels, color_close, make_html_site, make_pdf, mean_color, page_color

from dse.cli import main
from renderers import make_doc_id

REPO = Path(__file__).resolve().parents[2]


def _manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "pages.jsonl").read_text().splitlines()]


def test_all_rendered_exit_0(tmp_path, capsys):
    info = make_pdf(tmp_path / "report.pdf", n_pages=3)
    Image.new("RGB", (64, 48), (0, 0, 255)).save(tmp_path / "photo.png")
    out = tmp_path / "out"
    code = main(
        ["render", str(info.path), str(tmp_path / "photo.png"), "--out", str(out), "--dpi", "72", "--pages", "1,3"]
    )
    assert code == 0
    stdout = capsys.readouterr().out
    assert stdout.strip().splitlines()[-1].startswith("rendered 3 pages from 2 documents; 0 failures")
    rows = _manifest(out)
    got = [(Path(r["source"]).name, r["page"]) for r in rows]
    assert got == [("report.pdf", 1), ("report.pdf", 3), ("photo.png", 1)]
    for row in rows:
        assert set(row) == {"doc_id", "page", "source", "title", "width", "height", "settings", "image"}
        assert row["doc_id"] == make_doc_id(row["source"])
        assert row["image"] == f"{row['doc_id']}/p{row['page']:04d}.png"
        with Image.open(out / row["image"]) as im:
            assert im.size == (row["width"], row["height"]) and im.format == "PNG"
            if row["source"].endswith(".pdf"):
                assert (row["width"], row["height"]) == (596, 842) and row["settings"]["dpi"] == 72
                assert row["title"] == "Quarterly Retrieval Report"
                box = box_to_pixels(info.marker_box, *im.size)
                assert color_close(mean_color(im, box), page_color(row["page"]), 8)
            else:
                assert color_close(mean_color(im, (5, 5, 60, 44)), (0, 0, 255), 2)


def test_partial_failure_exit_1(tmp_path, capsys):
    good = make_pdf(tmp_path / "good.pdf", n_pages=2)
    (tmp_path / "bad.pdf").write_bytes(b"%PDF-1.4\ngarbage")
    secret = make_pdf(tmp_path / "secret.pdf", n_pages=1, password="pw")
    out = tmp_path / "out"
    code = main(
        [
            "render",
            str(tmp_path / "bad.pdf"),
            str(good.path),
            str(secret.path),
            str(tmp_path / "missing.pdf"),
            "--out",
            str(out),
            "--max-pixels",
            "200000",
        ]
    )
    assert code == 1
    captured = capsys.readouterr()
    assert "rendered 2 pages from 1 documents; 3 failures" in captured.out
    assert "failed:" in captured.err and "bad.pdf" in captured.err and "Traceback" not in captured.err
    rows = _manifest(out)
    errors = {Path(r["source"]).name: r for r in rows if "error" in r}
    assert set(errors) == {"bad.pdf", "secret.pdf", "missing.pdf"}
    assert errors["bad.pdf"]["error_type"] == "TruncatedDocumentError"
    assert errors["secret.pdf"]["error_type"] == "EncryptedDocumentError"
    assert "password" in errors["secret.pdf"]["error"]
    assert errors["missing.pdf"]["error_type"] == "SourceNotFoundError"
    pages = [r for r in rows if "error" not in r]
    assert [r["page"] for r in pages] == [1, 2]
    for r in pages:
        assert r["width"] * r["height"] <= 200000 and (out / r["image"]).is_file()
    # With the password the encrypted file renders.
    assert main(["render", str(secret.path), "--out", str(tmp_path / "o2"), "--password", "pw"]) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nothing-here-*.pdf"], "no sources matched"),
        (["{pdf}", "--pages", "3-1"], "bad page range '3-1'"),
        (["{pdf}", "--pages", "x"], "bad page range 'x'"),
    ],
)
def test_usage_errors_exit_2(tmp_path, capsys, args, message):
    pdf = make_pdf(tmp_path / "a.pdf", n_pages=1)
    args = [a.format(pdf=pdf.path) for a in args]
    assert main(["render", *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out" / "pages.jsonl").exists()


def test_out_is_a_file_and_bad_numbers_exit_2(tmp_path, capsys):
    pdf = make_pdf(tmp_path / "a.pdf", n_pages=1)
    (tmp_path / "file").write_text("x")
    assert main(["render", str(pdf.path), "--out", str(tmp_path / "file")]) == 2
    assert "not a directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # argparse validation
        main(["render", str(pdf.path), "--out", str(tmp_path / "o"), "--dpi", "-3"])
    assert exc.value.code == 2


@pytest.mark.subprocess
def test_real_process_exit_codes_and_no_traceback(tmp_path):
    """Run ``python -m dse render`` as users do: stdout summary, stderr messages, exit status."""
    good = make_pdf(tmp_path / "good.pdf", n_pages=1)
    (tmp_path / "bad.pdf").write_text("not a pdf")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "dse", "render", "--out", str(tmp_path / "out"), "--pdf-backend", "pdf2image"]
    ok = subprocess.run([*cmd, str(good.path)], capture_output=True, text=True, env=env, cwd=REPO)
    assert ok.returncode == 0, ok.stderr
    assert "rendered 1 pages from 1 documents; 0 failures" in ok.stdout
    part = subprocess.run(
        [*cmd, str(good.path), str(tmp_path / "bad.pdf")], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert part.returncode == 1 and "not a PDF file (looks like plain text)" in part.stderr
    assert "Traceback" not in part.stderr
    usage = subprocess.run([*cmd, str(tmp_path / "none*.pdf")], capture_output=True, text=True, env=env, cwd=REPO)
    assert usage.returncode == 2 and "no sources matched" in usage.stderr and "Traceback" not in usage.stderr
    rows = _manifest(tmp_path / "out")  # the last successful-or-partial run's manifest is intact
    assert [r.get("error_type") for r in rows] == [None, "FormatMismatchError"]


@pytest.mark.skipif(not shutil.which("chromium"), reason="Chromium is not installed")
@pytest.mark.browser
def test_web_tiles_from_the_cli(tmp_path, capsys):
    site = make_html_site(tmp_path / "www", n_pages=1, n_bands=2)
    out = tmp_path / "out"
    assert (
        main(["render", str(site.root / site.tall_name), "--out", str(out), "--web-mode", "tiles", "--timeout", "20"])
        == 0
    )
    rows = _manifest(out)
    assert [r["page"] for r in rows] == [1, 2] and all(r["title"] == "Tall page" for r in rows)
    for r, col in zip(rows, site.band_colors, strict=True):
        assert r["settings"]["mode"] == "tiles"
        with Image.open(out / r["image"]) as im:
            assert im.size == (980, 980) and color_close(mean_color(im, (10, 10, 970, 970)), col, 2)


def test_skipped_files_are_counted_and_listed_with_v(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    make_pdf(src / "a.pdf", n_pages=1)
    (src / "notes.txt").write_text("not a supported type")
    (src / "data.csv").write_text("a,b\n")
    (src / ".hidden.txt").write_text("ignored silently")
    assert main(["render", str(src), "--out", str(tmp_path / "o1"), "--dpi", "30"]) == 0
    out, err = capsys.readouterr()
    assert "rendered 1 pages from 1 documents; 0 failures; 2 skipped: unsupported type" in out
    assert "notes.txt" not in err
    assert main(["render", str(src), "--out", str(tmp_path / "o2"), "--dpi", "30", "-v"]) == 0
    err = capsys.readouterr().err
    listed = [line for line in err.splitlines() if line.startswith("skipped (unsupported type):")]
    assert [Path(line.split(": ", 1)[1]).name for line in listed] == ["data.csv", "notes.txt"]
    # a directory with nothing to render is a usage error that says why
    only = tmp_path / "only"
    only.mkdir()
    (only / "x.txt").write_text("x")
    assert main(["render", str(only), "--out", str(tmp_path / "o3")]) == 2
    err = capsys.readouterr().err
    assert "no sources matched" in err and "1 file skipped: unsupported type" in err
