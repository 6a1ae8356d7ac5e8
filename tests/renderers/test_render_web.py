"""Web pages via Playwright + system Chromium: modes, local files, the file:// guard,
and every failure kind (404, timeout, download, DNS, refused). Only loopback is used."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image
from support.docs import (
    Response,
    box_to_pixels,
    closed_port,
    color_close,
    dark_fraction,
    fraction_near,
    make_html_site,
    mean_color,
    serve_http,
)

from renderers import PageRecord, RenderFailure, RenderSettings, render
from renderers.web import file_url_allowed

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (os.environ.get("DSE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")),
        reason="Chromium is not installed",
    ),
]

RED, GREEN = (255, 0, 0), (0, 200, 0)


def _by_source(records) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in records:
        out.setdefault(r.source, []).append(r)
    return out


def _guarded_dir(root: Path) -> tuple[Path, Path]:
    """site/guard.html shows ok.png (inside its dir, green) next to three attempts to
    show ../secret.png (outside, red): a relative path, an absolute file:// URL and a
    symlink inside the directory that points outside."""
    site = root / "site"
    site.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (200, 200), RED).save(root / "secret.png")
    Image.new("RGB", (200, 200), GREEN).save(site / "ok.png")
    os.symlink(root / "secret.png", site / "link.png")
    secret_url = (root / "secret.png").resolve().as_uri()
    html = f"""<!doctype html><html><head><title>Guard</title><style>body{{margin:0}}
img{{position:absolute;top:0;width:200px;height:200px}}</style></head><body>
<img src="ok.png" style="left:0"><img src="../secret.png" style="left:250px">
<img src="{secret_url}" style="left:500px"><img src="link.png" style="left:750px"></body></html>"""
    (site / "guard.html").write_text(html)
    return site / "guard.html", root / "secret.png"


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """One job (one browser) over good pages and every kind of bad one."""
    root = tmp_path_factory.mktemp("web")
    site = make_html_site(root / "www", n_pages=3)
    guard_html, secret = _guarded_dir(root / "guarded")
    remote_leak = (
        f'<html><head><title>Leak</title></head><body style="margin:0">'
        f'<img src="{secret.resolve().as_uri()}" style="width:200px;height:200px"></body></html>'
    ).encode()
    routes = {
        "/slow": Response(delay=30),
        "/download.bin": Response(
            body=b"\x00" * 2048,
            headers={"Content-Type": "application/octet-stream", "Content-Disposition": 'attachment; filename="x.bin"'},
        ),
        "/broken": Response(status=500, body=b"<h1>oops</h1>"),
        "/leak.html": Response(body=remote_leak),
        "/hanging-image.html": Response(
            body=(
                b'<html><head><title>Half loaded</title></head><body style="margin:0">'
                b'<div style="width:300px;height:300px;background:rgb(0,0,255)"></div>'
                b'<img src="/never.png"></body></html>'
            )
        ),
        "/never.png": Response(delay=30, headers={"Content-Type": "image/png"}),
    }
    with serve_http(site.root, routes) as base:
        urls = {
            "p1": f"{base}/page1.html",
            "p2": f"{base}/page2.html",
            "p3": f"{base}/page3.html",
            "missing": f"{base}/missing.html",
            "slow": f"{base}/slow",
            "download": f"{base}/download.bin",
            "error500": f"{base}/broken",
            "leak": f"{base}/leak.html",
            "hanging": f"{base}/hanging-image.html",
            "dns": "http://no-such-host.invalid/",
            "refused": f"http://127.0.0.1:{closed_port()}/",
        }
        order = ["slow", "p1", "missing", "p2", "download", "dns", "refused", "error500", "leak", "hanging", "p3"]
        settings = RenderSettings(web_timeout=4, web_idle_timeout=0.5, web_concurrency=4)
        records = list(render([urls[k] for k in order] + [str(site.pages[0].path), str(guard_html)], settings))
    return {"site": site, "urls": urls, "order": order, "records": records, "guard": guard_html, "base": base}


def test_batch_keeps_input_order_and_one_result_per_source(batch):
    sources = list(dict.fromkeys(r.source for r in batch["records"]))
    expected = [batch["urls"][k] for k in batch["order"]]
    expected += [str(batch["site"].pages[0].path.resolve()), str(batch["guard"].resolve())]
    assert sources == expected


def test_viewport_mode_renders_served_pages(batch):
    by = _by_source(batch["records"])
    for i, page in enumerate(batch["site"].pages, start=1):
        (rec,) = by[batch["urls"][f"p{i}"]]
        assert isinstance(rec, PageRecord)
        assert rec.size == (980, 980) == rec.image.size and rec.page == 1
        assert rec.title == page.title
        assert rec.settings["mode"] == "viewport" and rec.settings["viewport"] == [980, 980]
        assert color_close(mean_color(rec.image, box_to_pixels(batch["site"].block_box, 980, 980)), page.color, 3)
        assert dark_fraction(rec.image, (20, 20, 600, 80)) > 0.03  # the <h1> text
        assert fraction_near(rec.image, (700, 700, 970, 970), (255, 255, 255), 2) > 0.99


def test_local_html_file(batch):
    page = batch["site"].pages[0]
    (rec,) = _by_source(batch["records"])[str(page.path.resolve())]
    assert isinstance(rec, PageRecord) and rec.title == page.title
    assert color_close(mean_color(rec.image, box_to_pixels(batch["site"].block_box, 980, 980)), page.color, 3)


def test_local_html_cannot_read_files_outside_its_directory(batch, caplog):
    (rec,) = _by_source(batch["records"])[str(batch["guard"].resolve())]
    assert isinstance(rec, PageRecord)
    img = rec.image
    assert color_close(mean_color(img, (20, 20, 180, 180)), GREEN, 3)  # inside the directory: loads
    for x in (250, 500, 750):  # ../secret.png, file:///.../secret.png, symlink -> secret.png
        assert fraction_near(img, (x + 20, 20, x + 180, 180), RED, 60) == 0.0, x


def test_page_whose_load_event_never_fires_is_captured_anyway(batch):
    """DOMContentLoaded arrives but an image never finishes: capture what is there."""
    (rec,) = _by_source(batch["records"])[batch["urls"]["hanging"]]
    assert isinstance(rec, PageRecord) and rec.title == "Half loaded"
    assert color_close(mean_color(rec.image, (10, 10, 290, 290)), (0, 0, 255), 3)


def test_remote_page_cannot_read_local_files(batch):
    (rec,) = _by_source(batch["records"])[batch["urls"]["leak"]]
    assert isinstance(rec, PageRecord) and rec.title == "Leak"
    assert fraction_near(rec.image, (0, 0, 250, 250), RED, 60) == 0.0


@pytest.mark.parametrize(
    ("key", "error_type", "text"),
    [
        ("missing", "HttpStatusError", "HTTP 404"),
        ("error500", "HttpStatusError", "HTTP 500"),
        ("slow", "RenderTimeoutError", "timed out after 4s"),
        ("download", "DownloadBlockedError", "download"),
        ("dns", "NetworkError", "DNS lookup failed for host 'no-such-host.invalid'"),
        ("refused", "NetworkError", "connection refused"),
    ],
)
def test_failures_are_reported_with_specific_reasons(batch, key, error_type, text):
    (rec,) = _by_source(batch["records"])[batch["urls"][key]]
    assert isinstance(rec, RenderFailure), rec
    assert rec.error_type == error_type and text in rec.reason, rec


def test_full_and_tiles_modes(tmp_path):
    site = make_html_site(tmp_path / "www", n_pages=1, n_bands=3)  # tall.html: 3 x 980 px bands
    with serve_http(site.root) as base:
        url = f"{base}/{site.tall_name}"
        full = list(render([url], RenderSettings(web_mode="full", web_idle_timeout=0.2)))
        tiles = list(render([url], RenderSettings(web_mode="tiles", web_idle_timeout=0.2)))
        picked = list(render([url], RenderSettings(web_mode="tiles", pages="2-", web_idle_timeout=0.2)))
    (page,) = full
    assert isinstance(page, PageRecord) and page.size == (980, 3 * 980)
    assert page.settings["mode"] == "full" and page.title == "Tall page"
    for b, col in enumerate(site.band_colors):
        assert color_close(mean_color(page.image, (10, b * 980 + 10, 970, b * 980 + 970)), col, 2)
    assert [t.page for t in tiles] == [1, 2, 3]
    for t, col in zip(tiles, site.band_colors, strict=True):
        assert t.size == (980, 980) and t.settings["tiles"] == 3 and t.settings["tile"] == t.page
        assert color_close(mean_color(t.image, (10, 10, 970, 970)), col, 2)
    assert [t.page for t in picked] == [2, 3]
    assert color_close(mean_color(picked[0].image, (10, 10, 970, 970)), site.band_colors[1], 2)


def test_pixel_budget_downscales_screenshots(tmp_path):
    site = make_html_site(tmp_path / "www", n_pages=1)
    (rec,) = list(render([site.pages[0].path], RenderSettings(max_pixels=250_000, web_idle_timeout=0.2)))
    assert isinstance(rec, PageRecord)
    assert rec.size == rec.image.size and rec.width * rec.height <= 250_000 and rec.width == rec.height
    w = rec.width
    assert color_close(mean_color(rec.image, box_to_pixels(site.block_box, w, w)), site.pages[0].color, 6)


def test_missing_chromium_is_a_clear_failure(tmp_path):
    site = make_html_site(tmp_path / "www", n_pages=1)
    (rec,) = list(render([site.pages[0].path], RenderSettings(chromium="/nonexistent/chromium")))
    assert isinstance(rec, RenderFailure) and rec.error_type == "BackendUnavailableError"
    assert "Chromium executable not found" in rec.reason


def test_file_url_guard_rules(tmp_path):
    site = tmp_path / "site"
    (site / "sub").mkdir(parents=True)
    (tmp_path / "outside.txt").write_text("x")
    os.symlink(tmp_path / "outside.txt", site / "escape.txt")
    uri = site.resolve().as_uri()
    assert file_url_allowed(f"{uri}/sub/a.png", site)
    assert file_url_allowed(f"{uri}/page.html", site)
    assert not file_url_allowed(f"{uri}/../outside.txt", site)
    assert not file_url_allowed(f"{uri}/%2e%2e/outside.txt", site)
    assert not file_url_allowed(f"{uri}/escape.txt", site)  # symlink resolved
    assert not file_url_allowed(f"{uri}-evil/x.png", site)  # prefix is not containment
    assert not file_url_allowed("file://otherhost/etc/passwd", site)
    assert not file_url_allowed(f"{uri}/page.html", None)  # remote pages: nothing


def test_guard_logs_blocked_requests(tmp_path, caplog):
    guard_html, _ = _guarded_dir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="renderers.web"):
        recs = list(render([guard_html], RenderSettings(web_idle_timeout=0.2)))
    assert isinstance(recs[0], PageRecord)
    assert any("blocked" in m and "file://" in m for m in caplog.messages)


def test_reused_tabs_do_not_leak_state_between_sources(tmp_path):
    """With one tab, every source reuses it: cookies must be cleared and the file://
    allowance of a local page must not carry over to the next (remote) page."""
    guard_html, _ = _guarded_dir(tmp_path / "guarded")  # local page: may load its own ok.png
    ok_png = (guard_html.parent / "ok.png").resolve().as_uri()
    set_cookie = b"<html><head><title>Set</title><script>document.cookie='seen=1; path=/'</script></head></html>"
    check_cookie = (
        b"<html><head><title>Check</title></head><body style='margin:0'><div id=d "
        b"style='width:300px;height:300px'></div><script>document.getElementById('d').style.background"
        b" = document.cookie.includes('seen=1') ? 'rgb(255,0,0)' : 'rgb(0,200,0)'</script></body></html>"
    )
    remote_ok = (
        f'<html><head><title>Remote</title></head><body style="margin:0"><img src="{ok_png}" '
        f'style="width:200px;height:200px"></body></html>'.encode()
    )
    other = tmp_path / "other" / "other.html"  # a local page elsewhere, pointing into the first one's dir
    other.parent.mkdir()
    other.write_text(remote_ok.decode().replace("Remote", "Other"))
    routes = {
        "/set.html": Response(body=set_cookie),
        "/check.html": Response(body=check_cookie),
        "/remote.html": Response(body=remote_ok),
    }
    with serve_http(None, routes) as base:
        recs = list(
            render(
                [
                    f"{base}/set.html",
                    f"{base}/check.html",
                    guard_html,
                    other,
                    guard_html.parent / "ok.png",
                    f"{base}/remote.html",
                ],
                RenderSettings(web_concurrency=1, web_idle_timeout=0.2),
            )
        )
    assert [r.title for r in recs] == ["Set", "Check", "Guard", "Other", None, "Remote"]
    check, local, other_rec, remote = recs[1], recs[2], recs[3], recs[5]
    assert color_close(mean_color(check.image, (10, 10, 290, 290)), GREEN, 3)  # no cookie from the last source
    assert color_close(mean_color(local.image, (20, 20, 180, 180)), GREEN, 3)  # own directory: allowed
    # The previous source's directory is not this page's directory: blocked by the guard.
    assert fraction_near(other_rec.image, (0, 0, 250, 250), GREEN, 40) == 0.0
    assert fraction_near(remote.image, (0, 0, 250, 250), GREEN, 40) == 0.0  # remote: no local file at all
