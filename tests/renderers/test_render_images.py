"""Image files: EXIF orientation, multi-frame TIFF, colour modes, pixel budget and
the decompression-bomb guard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.docs import (
    color_close,
    make_exif_rotated_jpeg,
    make_multiframe_tiff,
    make_png_header_only,
    mean_color,
    page_color,
)

from renderers import PageRecord, RenderFailure, RenderSettings, render


def _one(path: Path, settings: RenderSettings | None = None):
    recs = list(render([path], settings))
    assert len(recs) >= 1
    return recs


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    w, h = make_exif_rotated_jpeg(path)
    with Image.open(path) as raw:
        assert raw.size == (h, w)  # stored sideways
    (rec,) = _one(path)
    assert isinstance(rec, PageRecord)
    assert rec.size == (w, h) == rec.image.size
    assert rec.settings["exif_transposed"] is True
    # Upright: red on the left half, blue on the right half.
    assert color_close(mean_color(rec.image, (10, 10, w // 2 - 10, h - 10)), (255, 0, 0), 40)
    assert color_close(mean_color(rec.image, (w // 2 + 10, 10, w - 10, h - 10)), (0, 0, 255), 40)


def test_multiframe_tiff_gives_one_page_per_frame(tmp_path):
    path = tmp_path / "scan.tiff"
    colors = make_multiframe_tiff(path, n_frames=4)
    recs = _one(path)
    assert [r.page for r in recs] == [1, 2, 3, 4]
    for rec, col in zip(recs, colors, strict=True):
        assert color_close(mean_color(rec.image, (5, 5, 100, 70)), col, 2)
        assert rec.settings["frame"] == rec.page
    sel = list(render([path], RenderSettings(pages="2,4")))
    assert [r.page for r in sel] == [2, 4]
    assert color_close(mean_color(sel[1].image, (5, 5, 100, 70)), page_color(4), 2)


def test_colour_modes_become_rgb(tmp_path):
    cases = {}
    rgba = Image.new("RGBA", (40, 20), (255, 0, 0, 255))
    rgba.paste((0, 0, 0, 0), (20, 0, 40, 20))  # right half fully transparent
    rgba.save(tmp_path / "rgba.png")
    cases["rgba.png"] = [((2, 2, 18, 18), (255, 0, 0)), ((22, 2, 38, 18), (255, 255, 255))]
    Image.new("L", (20, 20), 90).save(tmp_path / "grey.png")
    cases["grey.png"] = [((2, 2, 18, 18), (90, 90, 90))]
    Image.new("RGB", (20, 20), (0, 128, 0)).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "pal.gif")
    cases["pal.gif"] = [((2, 2, 18, 18), (0, 128, 0))]
    Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(tmp_path / "cmyk.tiff")
    cases["cmyk.tiff"] = [((2, 2, 18, 18), (255, 0, 0))]
    deep = np.full((20, 20), 40000, dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep16.png")  # 16-bit greyscale: 40000/65535 ~ 156/255
    cases["deep16.png"] = [((2, 2, 18, 18), (156, 156, 156))]
    Image.new("RGB", (20, 20), (10, 20, 250)).save(tmp_path / "plain.webp", lossless=True)
    cases["plain.webp"] = [((2, 2, 18, 18), (10, 20, 250))]
    Image.new("RGB", (20, 20), (200, 100, 0)).save(tmp_path / "plain.bmp")
    cases["plain.bmp"] = [((2, 2, 18, 18), (200, 100, 0))]
    recs = {Path(r.source).name: r for r in render(sorted(tmp_path.iterdir()))}
    assert set(recs) == set(cases)
    for name, checks in cases.items():
        rec = recs[name]
        assert isinstance(rec, PageRecord), rec
        assert rec.image.mode == "RGB"
        for box, color in checks:
            assert color_close(mean_color(rec.image, box), color, 3), (name, mean_color(rec.image, box))


def test_images_over_the_budget_are_downscaled(tmp_path):
    img = Image.new("RGB", (1600, 1000), (255, 255, 255))
    img.paste((0, 0, 255), (800, 0, 1600, 1000))
    img.save(tmp_path / "big.png")
    img.save(tmp_path / "big.jpg", quality=95)
    for name in ("big.png", "big.jpg"):
        (rec,) = _one(tmp_path / name, RenderSettings(max_pixels=100_000))
        w, h = rec.size
        assert w * h <= 100_000 and w * h > 97_000 and abs(w / h - 1.6) < 0.02
        assert rec.image.size == (w, h) and rec.settings["original_size"] == [1600, 1000]
        assert color_close(mean_color(rec.image, (w // 2 + 10, 10, w - 10, h - 10)), (0, 0, 255), 12)
        assert color_close(mean_color(rec.image, (10, 10, w // 2 - 10, h - 10)), (255, 255, 255), 12)
    (small,) = _one(tmp_path / "big.png", RenderSettings(max_pixels=5_000_000))
    assert small.size == (1600, 1000)  # under the budget: untouched


def test_oversized_images_are_rejected_before_decoding(tmp_path):
    # Header claims 12000 x 12000 = 144 MP: over our 100 MP default, under Pillow's own bomb limit.
    make_png_header_only(tmp_path / "huge.png", 12000, 12000)
    # Header claims 20000 x 20000 = 400 MP: Pillow itself refuses to open it.
    make_png_header_only(tmp_path / "bomb.png", 20000, 20000)
    Image.new("RGB", (1200, 1000), (0, 200, 0)).save(tmp_path / "normal.png")
    recs = {Path(r.source).name: r for r in render(sorted(tmp_path.iterdir()))}
    huge, bomb, normal = recs["huge.png"], recs["bomb.png"], recs["normal.png"]
    assert isinstance(huge, RenderFailure) and huge.error_type == "ImageTooLargeError"
    assert "12000x12000" in huge.reason and "100 MP limit" in huge.reason
    assert isinstance(bomb, RenderFailure) and bomb.error_type == "ImageTooLargeError"
    assert "decompression bomb" in bomb.reason
    assert isinstance(normal, PageRecord) and normal.size == (1200, 1000)
    # The cap is configurable: a real 1.2 MP image is rejected under a 1 MP cap.
    (fail,) = _one(tmp_path / "normal.png", RenderSettings(image_max_pixels=1_000_000))
    assert isinstance(fail, RenderFailure) and fail.error_type == "ImageTooLargeError" and "1 MP limit" in fail.reason


def test_broken_and_mislabelled_images(tmp_path):
    good = tmp_path / "src.png"
    Image.new("RGB", (300, 300), (255, 0, 0)).save(good)
    data = good.read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "notes.jpg").write_text("hello, I am text\n")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "actually_png.jpg").write_bytes(data)  # image family mismatch: rendered by content
    recs = {Path(r.source).name: r for r in render(sorted(tmp_path.iterdir()))}
    assert isinstance(recs["src.png"], PageRecord)
    assert isinstance(recs["actually_png.jpg"], PageRecord) and recs["actually_png.jpg"].settings["format"] == "PNG"
    t = recs["truncated.png"]
    assert isinstance(t, RenderFailure) and t.error_type == "CorruptDocumentError" and "truncated" in t.reason
    n = recs["notes.jpg"]
    assert isinstance(n, RenderFailure) and n.error_type == "FormatMismatchError"
    assert n.reason == "not an image file (looks like plain text)"
    e = recs["empty.png"]
    assert isinstance(e, RenderFailure) and e.error_type == "EmptyFileError"


@pytest.mark.parametrize("name", ["a.gif", "a.webp"])
def test_animations_give_their_first_frame(tmp_path, name):
    frames = [Image.new("RGB", (30, 30), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:], duration=100, loop=0, lossless=True)
    recs = list(render([tmp_path / name]))
    assert len(recs) == 1 and isinstance(recs[0], PageRecord)
    assert color_close(mean_color(recs[0].image, (5, 5, 25, 25)), (255, 0, 0), 6)


def test_load_image_reads_like_the_indexer(tmp_path):
    """renderers.load_image (query images, uploads, eval corpora): path, bytes or file object ->
    the same upright RGB page the image renderer produces, with the same size guard and errors."""
    import io

    from renderers import CorruptDocumentError, ImageTooLargeError, SourceNotFoundError, load_image

    path = tmp_path / "rotated.jpg"
    w, h = make_exif_rotated_jpeg(path)
    (rec,) = _one(path)
    for given in (path, str(path), path.read_bytes(), io.BytesIO(path.read_bytes())):
        img = load_image(given)
        assert img.mode == "RGB" and img.size == (w, h)
        np.testing.assert_array_equal(np.asarray(img), np.asarray(rec.image))
    Image.new("RGBA", (1600, 1000), (0, 0, 255, 0)).save(tmp_path / "big.png")
    small = load_image(tmp_path / "big.png", max_pixels=400_000)
    assert small.mode == "RGB" and small.size[0] * small.size[1] <= 400_000
    assert color_close(mean_color(small, (0, 0, small.width, small.height)), (255, 255, 255), 2)  # alpha over white
    make_png_header_only(tmp_path / "huge.png", 12000, 12000)
    with pytest.raises(ImageTooLargeError, match="12000x12000"):
        load_image(tmp_path / "huge.png")
    with pytest.raises(ImageTooLargeError, match="1 MP limit"):
        load_image(tmp_path / "big.png", image_max_pixels=1_000_000)
    with pytest.raises(SourceNotFoundError, match="image not found"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(CorruptDocumentError, match="empty image data"):
        load_image(b"")
    with pytest.raises(CorruptDocumentError):
        load_image(b"hello, I am text\n")
