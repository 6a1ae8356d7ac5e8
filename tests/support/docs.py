"""Reusable document generators for tests and benchmarks (all built at run time).

Every generator writes a real document with the format's usual tooling (reportlab,
python-pptx, python-docx, Pillow, plain HTML) and returns a small description of
*where* distinctive content was placed, so tests can check rendered pixels rather
than only the presence of an output file.

Geometry conventions: boxes are ``(x0, y0, x1, y1)`` *fractions* of the page/slide
width and height, measured from the **top-left** corner, so a test can turn them
into pixel coordinates at any resolution with :func:`box_to_pixels`.

Import from tests as ``from support.docs import make_pdf`` (pytest puts ``tests/``
on ``sys.path``); benchmarks add ``tests/`` to ``sys.path`` themselves.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import random
import socketserver
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

Box = tuple[float, float, float, float]
RGB = tuple[int, int, int]

_WORDS = [
    "retrieval",
    "document",
    "screenshot",
    "embedding",
    "vision",
    "language",
    "model",
    "page",
    "index",
    "query",
    "passage",
    "layout",
    "table",
    "figure",
    "chart",
    "revenue",
    "quarter",
    "growth",
    "dataset",
    "benchmark",
    "recall",
    "precision",
    "encoder",
    "token",
    "patch",
    "resolution",
    "latency",
    "throughput",
    "memory",
    "corpus",
    "slide",
]


def page_color(page: int) -> RGB:
    """A saturated colour unique to 1-based ``page`` (for page-identity checks)."""
    palette = [
        (220, 30, 30),
        (30, 160, 40),
        (30, 60, 220),
        (230, 150, 0),
        (150, 30, 200),
        (0, 170, 170),
        (200, 0, 120),
        (120, 90, 20),
        (90, 200, 90),
        (60, 140, 230),
    ]
    base = palette[(page - 1) % len(palette)]
    shift = ((page - 1) // len(palette)) * 7
    return tuple(max(0, c - shift) for c in base)  # type: ignore[return-value]


def box_to_pixels(box: Box, width: int, height: int, *, inset: float = 0.2) -> tuple[int, int, int, int]:
    """Pixel rectangle ``(x0, y0, x1, y1)`` for a fractional ``box``, shrunk by ``inset``
    (fraction of the box size on each side) so anti-aliased edges are excluded."""
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) * inset, (y1 - y0) * inset
    return (
        int((x0 + dx) * width),
        int((y0 + dy) * height),
        int((x1 - dx) * width),
        int((y1 - dy) * height),
    )


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


# --------------------------------------------------------------------------- PDF


@dataclass
class PdfInfo:
    """What :func:`make_pdf` drew. Boxes are fractions from the top-left."""

    path: Path
    n_pages: int
    page_size: tuple[float, float]  # points (1/72 inch)
    title: str | None
    password: str | None
    marker_box: Box  # solid block in the page colour (see page_color), every page
    text_box: Box  # area covered by body text lines
    chart_box: Box  # bar chart drawing area (bars in chart_colors)
    table_box: Box  # ruled table with a header row filled in table_header_color
    table_header_box: Box
    chart_colors: tuple[RGB, ...] = ((40, 90, 200), (230, 120, 20), (40, 170, 80))
    table_header_color: RGB = (25, 25, 112)
    marker_colors: list[RGB] = field(default_factory=list)


def make_pdf(
    path: str | Path,
    n_pages: int = 3,
    *,
    title: str | None = "Quarterly Retrieval Report",
    page_size: tuple[float, float] = (595.27, 841.89),
    password: str | None = None,
    seed: int = 0,
    compress: bool = True,
) -> PdfInfo:
    """Write a multi-page report: heading, paragraphs, a bar chart and a table per page.

    Each page also carries a solid "marker" block in :func:`page_color` ``(page)``
    at ``marker_box`` so a rendered page can be identified by colour.
    ``password`` encrypts the file (user password) with reportlab's standard security.
    """
    from reportlab.graphics import renderPDF
    from reportlab.graphics.charts.barcharts import VerticalBarChart
    from reportlab.graphics.shapes import Drawing
    from reportlab.lib import colors
    from reportlab.pdfgen import canvas

    path = Path(path)
    w, h = page_size
    rng = random.Random(seed)
    c = canvas.Canvas(str(path), pagesize=page_size, encrypt=password, pageCompression=1 if compress else 0)
    if title is not None:
        c.setTitle(title)
    c.setAuthor("dse tests")

    def frac(x0: float, top: float, x1: float, bottom: float) -> Box:
        return (x0 / w, top / h, x1 / w, bottom / h)

    # Layout in points measured from the top.
    marker = (w - 130, 40, w - 50, 100)
    text_top, text_bottom = 110, 300
    chart = (60, 330, 320, 530)
    table = (60, 570, w - 60, 570 + 6 * 22)
    table_header = (table[0], table[1], table[2], table[1] + 22)
    info = PdfInfo(
        path=path,
        n_pages=n_pages,
        page_size=page_size,
        title=title,
        password=password,
        marker_box=frac(*marker),
        text_box=frac(60, text_top, w - 60, text_bottom),
        chart_box=frac(*chart),
        table_box=frac(*table),
        table_header_box=frac(*table_header),
    )
    for page in range(1, n_pages + 1):
        color = page_color(page)
        info.marker_colors.append(color)
        # Marker block.
        c.setFillColorRGB(*(v / 255 for v in color))
        c.rect(marker[0], h - marker[3], marker[2] - marker[0], marker[3] - marker[1], stroke=0, fill=1)
        # Heading + body text (black).
        c.setFillColorRGB(0, 0, 0)
        c.setFont("Helvetica-Bold", 20)
        c.drawString(60, h - 70, f"Section {page}: {(title or 'Report')[:30]}")
        c.setFont("Helvetica", 11)
        y = text_top + 14
        while y < text_bottom:
            c.drawString(60, h - y, _words(rng, 12).capitalize() + ".")
            y += 16
        # Bar chart.
        d = Drawing(chart[2] - chart[0], chart[3] - chart[1])
        bc = VerticalBarChart()
        bc.x, bc.y = 30, 20
        bc.width, bc.height = chart[2] - chart[0] - 40, chart[3] - chart[1] - 30
        bc.data = [[rng.randint(40, 100) for _ in range(4)] for _ in range(3)]
        bc.valueAxis.valueMin, bc.valueAxis.valueMax = 0, 100
        bc.categoryAxis.categoryNames = ["Q1", "Q2", "Q3", "Q4"]
        for i, col in enumerate(info.chart_colors):
            bc.bars[i].fillColor = colors.Color(*(v / 255 for v in col))
            bc.bars[i].strokeColor = None
        d.add(bc)
        renderPDF.draw(d, c, chart[0], h - chart[3])
        # Table: header row filled, grid lines, cell text.
        c.setFillColorRGB(*(v / 255 for v in info.table_header_color))
        c.rect(table[0], h - table_header[3], table[2] - table[0], 22, stroke=0, fill=1)
        c.setStrokeColorRGB(0, 0, 0)
        cols = 4
        col_w = (table[2] - table[0]) / cols
        for r in range(7):
            c.line(table[0], h - (table[1] + r * 22), table[2], h - (table[1] + r * 22))
        for k in range(cols + 1):
            c.line(table[0] + k * col_w, h - table[1], table[0] + k * col_w, h - table[3])
        c.setFont("Helvetica-Bold", 10)
        c.setFillColorRGB(1, 1, 1)
        for k, name in enumerate(["Model", "nDCG@10", "Recall@100", "Latency"]):
            c.drawString(table[0] + k * col_w + 6, h - (table[1] + 15), name)
        c.setFont("Helvetica", 10)
        c.setFillColorRGB(0, 0, 0)
        for r in range(1, 6):
            for k in range(cols):
                cell = rng.choice(_WORDS) if k == 0 else f"{rng.uniform(0, 100):.1f}"
                c.drawString(table[0] + k * col_w + 6, h - (table[1] + r * 22 + 15), cell)
        c.setFont("Helvetica", 9)
        c.drawString(w / 2 - 20, 30, f"- {page} -")
        c.showPage()
    c.save()
    return info


# ------------------------------------------------------------------- slides / docs


@dataclass
class PptxInfo:
    path: Path
    n_slides: int
    titles: list[str]
    shape_box: Box  # solid rectangle on every slide, colour page_color(slide)
    colors: list[RGB]
    aspect: float  # width / height


def make_pptx(path: str | Path, n_slides: int = 3, *, titles: Sequence[str] | None = None) -> PptxInfo:
    """A deck with a title and a solid coloured rectangle (page_color(i)) on each slide."""
    from pptx import Presentation
    from pptx.dml.color import RGBColor
    from pptx.enum.shapes import MSO_SHAPE
    from pptx.util import Emu

    path = Path(path)
    prs = Presentation()
    sw, sh = prs.slide_width, prs.slide_height
    box = (0.55, 0.45, 0.9, 0.85)
    titles = list(titles) if titles else [f"Slide {i} results overview" for i in range(1, n_slides + 1)]
    cols = []
    for i in range(1, n_slides + 1):
        slide = prs.slides.add_slide(prs.slide_layouts[5])  # "Title Only"
        slide.shapes.title.text = titles[i - 1]
        col = page_color(i)
        cols.append(col)
        shape = slide.shapes.add_shape(
            MSO_SHAPE.RECTANGLE,
            Emu(int(sw * box[0])),
            Emu(int(sh * box[1])),
            Emu(int(sw * (box[2] - box[0]))),
            Emu(int(sh * (box[3] - box[1]))),
        )
        shape.fill.solid()
        shape.fill.fore_color.rgb = RGBColor(*col)
        shape.line.fill.background()
        tb = slide.shapes.add_textbox(Emu(int(sw * 0.08)), Emu(int(sh * 0.45)), Emu(int(sw * 0.4)), Emu(int(sh * 0.3)))
        tb.text_frame.word_wrap = True
        tb.text_frame.text = "Key points: recall improved; latency reduced; index smaller."
    prs.save(str(path))
    return PptxInfo(path=path, n_slides=n_slides, titles=titles, shape_box=box, colors=cols, aspect=sw / sh)


@dataclass
class DocxInfo:
    path: Path
    title: str
    heading: str
    picture_color: RGB


def make_docx(path: str | Path, *, title: str = "Design Notes", n_paragraphs: int = 6, seed: int = 0) -> DocxInfo:
    """A Word document: core title, a heading, paragraphs and a solid-colour picture."""
    from docx import Document
    from docx.shared import Inches
    from PIL import Image

    path = Path(path)
    rng = random.Random(seed)
    doc = Document()
    doc.core_properties.title = title
    heading = f"{title}: overview"
    doc.add_heading(heading, level=1)
    for _ in range(n_paragraphs):
        doc.add_paragraph(_words(rng, 40).capitalize() + ".")
    color = (0, 150, 200)
    buf = io.BytesIO()
    Image.new("RGB", (300, 150), color).save(buf, format="PNG")
    buf.seek(0)
    doc.add_picture(buf, width=Inches(3))
    doc.save(str(path))
    return DocxInfo(path=path, title=title, heading=heading, picture_color=color)


# --------------------------------------------------------------------------- HTML


@dataclass
class HtmlPage:
    path: Path
    name: str  # file name, also the URL path under the site root
    title: str
    color: RGB  # background of a block at block_box (fractions of a 980x980 viewport)


@dataclass
class HtmlSite:
    root: Path
    pages: list[HtmlPage]
    block_box: Box = (0.1, 0.2, 0.5, 0.6)
    tall_name: str = "tall.html"
    band_height: int = 980  # px; tall.html stacks bands of this height
    band_colors: list[RGB] = field(default_factory=list)


def make_html_site(root: str | Path, n_pages: int = 3, *, n_bands: int = 3) -> HtmlSite:
    """Static HTML pages plus ``tall.html`` (``n_bands`` stacked 980-px colour bands).

    Page ``i`` (1-based, ``page{i}.html``) has ``<title>Page i</title>``, a heading and an
    absolutely-positioned block of colour ``page_color(i)`` covering ``block_box`` of
    a 980x980 viewport.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    site = HtmlSite(root=root, pages=[])
    x0, y0, x1, y1 = site.block_box
    for i in range(1, n_pages + 1):
        col = page_color(i)
        title = f"Page {i}"
        html = f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{margin:0;background:#fff;font:20px sans-serif}}
#blk{{position:absolute;left:{x0 * 980}px;top:{y0 * 980}px;width:{(x1 - x0) * 980}px;height:{(y1 - y0) * 980}px;
background:rgb{col}}}</style></head>
<body><h1 style="margin:20px">{title}: document retrieval</h1><div id="blk"></div></body></html>"""
        p = root / f"page{i}.html"
        p.write_text(html, encoding="utf-8")
        site.pages.append(HtmlPage(path=p, name=p.name, title=title, color=col))
    bands = []
    for b in range(1, n_bands + 1):
        col = page_color(b + 4)
        site.band_colors.append(col)
        bands.append(f'<div style="height:{site.band_height}px;background:rgb{col}"></div>')
    (root / site.tall_name).write_text(
        "<!doctype html><html><head><title>Tall page</title><style>body{margin:0}</style></head><body>"
        + "".join(bands)
        + "</body></html>",
        encoding="utf-8",
    )
    return site


# -------------------------------------------------------------------------- images


def make_exif_rotated_jpeg(path: str | Path, size: tuple[int, int] = (200, 100)) -> tuple[int, int]:
    """A JPEG whose *upright* view is ``size`` (w, h) with a red left half and blue right
    half; the pixels are stored rotated and EXIF Orientation=6 says "rotate 90° CW".

    Returns the upright (width, height).
    """
    from PIL import Image

    w, h = size
    upright = Image.new("RGB", (w, h), (0, 0, 255))
    upright.paste((255, 0, 0), (0, 0, w // 2, h))
    stored = upright.rotate(90, expand=True)  # CCW by 90 -> viewer must rotate 90 CW (orientation 6)
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(path, format="JPEG", quality=95, exif=exif.tobytes())
    return w, h


def make_multiframe_tiff(path: str | Path, n_frames: int = 3, size: tuple[int, int] = (120, 80)) -> list[RGB]:
    """A multi-page TIFF; frame ``i`` is filled with ``page_color(i)``."""
    from PIL import Image

    frames = [Image.new("RGB", size, page_color(i)) for i in range(1, n_frames + 1)]
    frames[0].save(path, format="TIFF", save_all=True, append_images=frames[1:])
    return [page_color(i) for i in range(1, n_frames + 1)]


def make_png_header_only(path: str | Path, width: int, height: int) -> None:
    """A tiny PNG whose IHDR *claims* ``width`` x ``height`` (no real pixel data):
    a decompression-bomb stand-in that costs a few bytes on disk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


# ---------------------------------------------------------------- loopback server


@dataclass
class Response:
    """A canned HTTP response for :func:`serve_http` ``routes``."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "text/html; charset=utf-8"})
    delay: float = 0.0  # seconds to wait before sending anything


class _ThreadingServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


@contextlib.contextmanager
def serve_http(
    root: str | Path | None = None,
    routes: dict[str, Response | Callable[[], Response]] | None = None,
) -> Iterator[str]:
    """Serve ``root`` (static files) plus canned ``routes`` on ``127.0.0.1:<free port>``.

    Yields the base URL (``http://127.0.0.1:PORT``). Unknown paths give 404.
    Requests are served concurrently (one thread each), so a slow route doesn't
    block the others. Only loopback is ever bound.
    """
    routes = dict(routes or {})
    root_dir = Path(root) if root is not None else None

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root_dir) if root_dir else "/nonexistent", **kw)

        def log_message(self, *args):  # keep test output quiet
            pass

        def do_GET(self):
            path = self.path.split("?", 1)[0]
            if path in routes:
                r = routes[path]
                resp = r() if callable(r) else r
                if resp.delay:
                    time.sleep(resp.delay)
                try:
                    self.send_response(resp.status)
                    for k, v in resp.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(resp.body)))
                    self.end_headers()
                    self.wfile.write(resp.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                return
            if root_dir is None:
                self.send_error(404)
                return
            super().do_GET()

        def handle(self):
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                super().handle()

    server = _ThreadingServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="test-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    """A loopback TCP port with nothing listening (bound then released)."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ------------------------------------------------------------------ pixel checks


def mean_color(image, box: tuple[int, int, int, int]) -> RGB:
    """Mean RGB of the pixel rectangle ``box`` = (x0, y0, x1, y1) of a PIL image."""
    import numpy as np

    arr = np.asarray(image.convert("RGB").crop(box), dtype=np.float64)
    return tuple(int(round(v)) for v in arr.reshape(-1, 3).mean(axis=0))  # type: ignore[return-value]


def color_close(a: Sequence[int], b: Sequence[int], tol: int = 30) -> bool:
    """Whether two RGB colours differ by at most ``tol`` in every channel."""
    return all(abs(int(x) - int(y)) <= tol for x, y in zip(a, b, strict=True))


def fraction_near(image, box: tuple[int, int, int, int], color: Sequence[int], tol: int = 30) -> float:
    """Fraction of pixels in ``box`` within ``tol`` of ``color``."""
    import numpy as np

    arr = np.asarray(image.convert("RGB").crop(box), dtype=np.int16)
    near = (np.abs(arr - np.asarray(color, dtype=np.int16)) <= tol).all(axis=-1)
    return float(near.mean()) if near.size else 0.0


def dark_fraction(image, box: tuple[int, int, int, int], threshold: int = 100) -> float:
    """Fraction of pixels in ``box`` whose grey level is below ``threshold`` (text ink)."""
    import numpy as np

    arr = np.asarray(image.convert("L").crop(box))
    return float((arr < threshold).mean()) if arr.size else 0.0
