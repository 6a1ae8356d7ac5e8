"""Hub loaders (BEIR-style and QA-style) from save_to_disk, parquet and a (simulated) hub id.

The hub is unreachable in tests: the tables are ``datasets.Dataset`` objects built here,
written with ``save_to_disk`` / ``to_parquet`` and read back through the same code path a
hub id takes after download. The hub-id path is exercised by redirecting
``datasets.load_dataset(hub_id, config, split=...)`` to the parquet copy.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import datasets
import pytest
from PIL import Image

from dse.eval import hub
from dse.eval.data import DatasetFormatError, load_local_dataset, write_local_dataset
from dse.eval.hub import (
    PUBLISHED,
    VIDORE_V1,
    VIDORE_V2,
    HubDatasetError,
    benchmark_tasks,
    load_hub_dataset,
    published_score,
)

COLORS = {"A": (200, 20, 20), "B": (20, 200, 20), "C": (20, 20, 200), "D": (200, 200, 20), "E": (20, 200, 200)}


def _img(color: str, fmt: str = "PNG") -> Image.Image:
    im = Image.new("RGB", (40, 30), COLORS[color])
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return Image.open(io.BytesIO(buf.getvalue()))


def _pixel(path: Path) -> tuple[int, int, int]:
    with Image.open(path) as im:
        return im.convert("RGB").getpixel((5, 5))


# --------------------------------------------------------------------------- QA-style


def qa_table() -> datasets.Dataset:
    rows = [  # (query, image, image_filename)
        ("what is A?", "A", "a.png"),
        (None, "A", "a.png"),  # same page again, no query
        ("what is B?", "B", "dir/b 1.jpg"),  # JPEG, whitespace in the file name
        ("what is A?", "C", "c.png"),  # duplicate query text: the LAST row's page is relevant
        ("what is D?", "D", "d.png"),
        (None, "E", "e.png"),  # a page no query points to
    ]
    features = datasets.Features(
        {
            "query": datasets.Value("string"),
            "image": datasets.Image(),
            "image_filename": datasets.Value("string"),
            "answer": datasets.Value("string"),
        }
    )
    return datasets.Dataset.from_dict(
        {
            "query": [r[0] for r in rows],
            "image": [_img(r[1], "JPEG" if r[2].endswith(".jpg") else "PNG") for r in rows],
            "image_filename": [r[2] for r in rows],
            "answer": ["x"] * len(rows),
        },
        features=features,
    )


def check_qa(ds, cache: Path) -> None:
    assert [c.id for c in ds.corpus] == ["a.png", "dir/b_1.jpg", "c.png", "d.png", "e.png"]
    assert [(q.id, q.text) for q in ds.queries] == [("0", "what is A?"), ("1", "what is B?"), ("2", "what is D?")]
    assert ds.qrels == {"0": {"c.png": 1}, "1": {"dir/b_1.jpg": 1}, "2": {"d.png": 1}}
    colors = {c.id: _pixel(c.image) for c in ds.corpus}
    assert colors["a.png"] == COLORS["A"] and colors["c.png"] == COLORS["C"] and colors["e.png"] == COLORS["E"]
    assert max(abs(a - b) for a, b in zip(colors["dir/b_1.jpg"], COLORS["B"])) < 12  # JPEG
    for c in ds.corpus:
        assert c.image.is_absolute() and c.image.suffix == ".png" and cache in c.image.parents
        assert c.image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("kind", ["save_to_disk", "dataset_dict", "parquet"])
def test_qa_layout_from_local_copy(kind: str, tmp_path: Path) -> None:
    table = qa_table()
    copy = tmp_path / "copy"
    if kind == "save_to_disk":
        table.save_to_disk(str(copy))
    elif kind == "dataset_dict":
        datasets.DatasetDict({"train": table.select([0]), "test": table}).save_to_disk(str(copy))
    else:  # a hub snapshot: data/test-00000-of-00001.parquet
        (copy / "data").mkdir(parents=True)
        table.to_parquet(str(copy / "data" / "test-00000-of-00001.parquet"))
    cache = tmp_path / "cache"
    ds = load_hub_dataset("docvqa_test_subsampled", data_dir=copy, cache_dir=cache, progress=False)
    check_qa(ds, cache)
    # the local format round-trips
    out = write_local_dataset(ds, tmp_path / "local")
    again = load_local_dataset(out)
    assert again.qrels == ds.qrels and [c.id for c in again.corpus] == [c.id for c in ds.corpus]


def test_images_materialised_once(tmp_path: Path) -> None:
    table = qa_table()
    table.save_to_disk(str(tmp_path / "copy"))
    first = load_hub_dataset("x", data_dir=tmp_path / "copy", cache_dir=tmp_path / "c", progress=False)
    stamps = {c.id: c.image.stat().st_mtime_ns for c in first.corpus}
    second = load_hub_dataset("x", data_dir=tmp_path / "copy", cache_dir=tmp_path / "c", progress=False)
    assert {c.id: c.image.stat().st_mtime_ns for c in second.corpus} == stamps


# --------------------------------------------------------------------------- BEIR-style


def beir_tables() -> dict[str, datasets.Dataset]:
    corpus = datasets.Dataset.from_dict(
        {"corpus-id": [10, 11, 12, 13], "image": [_img(c) for c in "ABCD"]},
        features=datasets.Features({"corpus-id": datasets.Value("int64"), "image": datasets.Image()}),
    )
    queries = datasets.Dataset.from_dict(
        {
            "query-id": [1, 2, 3, 4],
            "query": ["red page?", "green or blue?", "unjudged query", "¿página amarilla?"],
            "language": ["english", "english", "english", "spanish"],
        }
    )
    qrels = datasets.Dataset.from_dict(
        {
            "query-id": [1, 2, 2, 4, 99],
            "corpus-id": [10, 11, 12, 13, 10],
            "score": [1, 2, 1, 1, 1],
        }
    )
    return {"corpus": corpus, "queries": queries, "qrels": qrels}


def check_beir(ds) -> None:
    assert [c.id for c in ds.corpus] == ["10", "11", "12", "13"]
    assert [(q.id, q.text) for q in ds.queries] == [
        ("1", "red page?"),
        ("2", "green or blue?"),
        ("4", "¿página amarilla?"),
    ]
    assert ds.qrels == {"1": {"10": 1}, "2": {"11": 2, "12": 1}, "4": {"13": 1}}
    assert {c.id: _pixel(c.image) for c in ds.corpus} == {
        "10": COLORS["A"],
        "11": COLORS["B"],
        "12": COLORS["C"],
        "13": COLORS["D"],
    }


@pytest.mark.parametrize("kind", ["save_to_disk", "parquet", "dataset_dict"])
def test_beir_layout_from_local_copy(kind: str, tmp_path: Path) -> None:
    tables = beir_tables()
    copy = tmp_path / "copy"
    if kind == "dataset_dict":
        datasets.DatasetDict(tables).save_to_disk(str(copy))
    for config, table in tables.items():
        if kind == "save_to_disk":
            datasets.DatasetDict({"test": table}).save_to_disk(str(copy / config))
        elif kind == "parquet":  # hub snapshot layout: corpus/test-00000-of-00001.parquet, ...
            (copy / config).mkdir(parents=True)
            table.to_parquet(str(copy / config / "test-00000-of-00001.parquet"))
    ds = load_hub_dataset("esg_reports_v2", data_dir=copy, cache_dir=tmp_path / "cache", progress=False)
    check_beir(ds)
    spanish = load_hub_dataset(
        "esg_reports_v2", data_dir=copy, cache_dir=tmp_path / "cache", language="spanish", progress=False
    )
    assert [q.id for q in spanish.queries] == ["4"] and spanish.qrels == {"4": {"13": 1}}


# --------------------------------------------------------------------------- the hub-id code path


def _snapshot(tmp_path: Path) -> dict[tuple[str, str | None], Path]:
    """Parquet copies standing in for hub repos: (hub id, config) -> parquet file."""
    files: dict[tuple[str, str | None], Path] = {}
    qa = tmp_path / "qa.parquet"
    qa_table().to_parquet(str(qa))
    files[(VIDORE_V1[1], None)] = qa
    files[("someone/qa_style_set", None)] = qa
    for config, table in beir_tables().items():
        path = tmp_path / f"{config}.parquet"
        table.to_parquet(str(path))
        files[(VIDORE_V2[0], config)] = path
        files[("someone/beir_style_set", config)] = path
    return files


def test_hub_ids_use_the_same_conversion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = _snapshot(tmp_path)
    real = datasets.load_dataset
    calls: list[tuple[str, str | None]] = []

    def fake_load_dataset(path, name=None, *, split=None, **kw):
        calls.append((path, name))
        if (path, name) not in files:
            if any(p == path for p, _ in files):
                raise ValueError(f"BuilderConfig '{name}' not found. Available: ['default']")
            raise datasets.exceptions.DatasetNotFoundError(f"Dataset '{path}' doesn't exist on the Hub")
        return real("parquet", data_files=[str(files[(path, name)])], split="train", cache_dir=str(tmp_path / "hf"))

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    cache = tmp_path / "cache"
    check_qa(load_hub_dataset("docvqa_test_subsampled", cache_dir=cache, progress=False), cache)
    assert calls == [(VIDORE_V1[1], None)]  # v1: QA-style, no config probing
    calls.clear()
    check_beir(load_hub_dataset(VIDORE_V2[0], cache_dir=cache, progress=False))
    assert [c for _, c in calls] == ["corpus", "queries", "qrels"]
    calls.clear()
    check_beir(load_hub_dataset("someone/beir_style_set", cache_dir=cache, progress=False))
    check_qa(load_hub_dataset("someone/qa_style_set", cache_dir=cache, progress=False), cache)
    assert calls[-2:] == [("someone/qa_style_set", "corpus"), ("someone/qa_style_set", None)]
    with pytest.raises(HubDatasetError, match="no dataset 'someone/missing' on the Hugging Face hub"):
        load_hub_dataset("someone/missing", cache_dir=cache, progress=False)


def test_unreachable_hub_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "empty-hf-cache"))
    with pytest.raises(HubDatasetError) as err:
        load_hub_dataset("vidore/esg_reports_v2", cache_dir=tmp_path, progress=False)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("cannot reach the Hugging Face hub to download 'vidore/esg_reports_v2'")
    assert "--data-dir" in message


# --------------------------------------------------------------------------- bad input


def test_bad_local_copies(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetFormatError, match="no dataset found"):
        load_hub_dataset("x", data_dir=empty, cache_dir=tmp_path / "c")
    with pytest.raises(DatasetFormatError, match="no such file or directory"):
        load_hub_dataset("x", data_dir=tmp_path / "nope", cache_dir=tmp_path / "c")
    no_fn = qa_table().remove_columns(["image_filename"])
    no_fn.save_to_disk(str(tmp_path / "nofn"))
    with pytest.raises(DatasetFormatError, match="missing column\\(s\\) 'image_filename'"):
        load_hub_dataset("x", data_dir=tmp_path / "nofn", cache_dir=tmp_path / "c")
    bad_parquet = tmp_path / "badpq"
    bad_parquet.mkdir()
    (bad_parquet / "test.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DatasetFormatError, match="cannot read the dataset"):
        load_hub_dataset("x", data_dir=bad_parquet, cache_dir=tmp_path / "c")
    with pytest.raises(DatasetFormatError, match="no split 'dev'"):
        datasets.DatasetDict({"test": qa_table()}).save_to_disk(str(tmp_path / "dd"))
        load_hub_dataset("x", data_dir=tmp_path / "dd", split="dev", cache_dir=tmp_path / "c")

    # one undecodable image: reported, left out; the rest loads
    tables = beir_tables()
    raw = tables["corpus"].cast_column("image", datasets.Image(decode=False))
    images = list(raw["image"])
    images[1] = {"bytes": b"\x89PNG\r\n\x1a\n garbage", "path": None}
    tables["corpus"] = datasets.Dataset.from_dict(
        {"corpus-id": list(raw["corpus-id"]), "image": images},
        features=datasets.Features({"corpus-id": datasets.Value("int64"), "image": datasets.Image(decode=False)}),
    )
    for config, table in tables.items():
        table.save_to_disk(str(tmp_path / "beir" / config))
    ds = load_hub_dataset("x", data_dir=tmp_path / "beir", cache_dir=tmp_path / "c", progress=False)
    assert [c.id for c in ds.corpus] == ["10", "12", "13"]
    assert ds.qrels["2"] == {"11": 2, "12": 1}  # the lost page still counts as relevant
    assert any("corpus id 11: unreadable image" in r.getMessage() for r in caplog.records)


def test_benchmark_lists_and_published_figures() -> None:
    assert len(VIDORE_V1) == 10 and len(set(VIDORE_V1)) == 10
    assert "vidore/docvqa_test_subsampled" in VIDORE_V1 and "vidore/esg_reports_human_labeled_v2" in VIDORE_V2
    assert benchmark_tasks("vidore-v2") == VIDORE_V2
    with pytest.raises(ValueError, match="unknown benchmark 'vidore-v3'"):
        benchmark_tasks("vidore-v3")
    assert published_score("MrLight/dse-qwen2-2b-mrl-v1", "vidore-v1") == 85.8
    assert published_score("vidore/colqwen2-v1.0", "vidore-v1") == 89.3
    assert published_score("vidore/colqwen2-v1.0", "vidore-v2") is None
    assert set(PUBLISHED) == {
        "MrLight/dse-qwen2-2b-mrl-v1",
        "vidore/colpali-v1.3",
        "vidore/colqwen2-v1.0",
        "vidore/colqwen2.5-v0.2",
        "vidore/colSmol-256M",
    }
    assert hub.resolve_name("tatdqa_test") == "vidore/tatdqa_test" and hub.resolve_name("own/x") == "own/x"


# --------------------------------------------------------------------------- SlideVQA


def _slide(path: Path, color: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 24), COLORS[color]).save(path)


def _slidevqa_miniature(root: Path) -> tuple[Path, Path]:
    images = root / "images"
    # deck "alpha": SlideShare file names as download_slides_slideshare.py saves them (image_urls given)
    for n, color in zip((1, 2, 3), "ABC"):
        _slide(images / "test" / "alpha" / f"alpha-deck-{n}-1024.jpg", color)
    # deck "beta": slide_<n> names, no image_urls; slide 3 missing
    for n, color in zip((1, 2), "DE"):
        _slide(images / "test" / "beta" / f"slide_{n}.png", color)
    # deck "gamma": no question (another split's deck), still part of the open corpus
    _slide(images / "train" / "gamma" / "gamma-1-638.jpg", "A")
    urls = [f"https://image.slidesharecdn.com/alpha/95/alpha-deck-{n}-1024.jpg?cb=123" for n in (1, 2, 3)]
    lines = [
        {
            "qa_id": 7,
            "deck_name": "alpha",
            "deck_url": "x",
            "image_urls": urls,
            "question": "What is on slide 2?",
            "answer": "B",
            "evidence_pages": [2],
            "reasoning_type": "single-hop",
            "answer_type": "span",
        },
        {
            "qa_id": 8,
            "deck_name": "alpha",
            "image_urls": urls,
            "question": "Compare slides 1 and 3",
            "answer": "A, C",
            "evidence_pages": [3, 1],
        },
        {"qa_id": 9, "deck_name": "beta", "question": "Slides 2 and 3?", "answer": "E", "evidence_pages": [2, 3]},
        {"qa_id": 10, "deck_name": "beta", "question": "Only the missing slide", "answer": "-", "evidence_pages": [3]},
        {"qa_id": 11, "deck_name": "delta", "question": "A deck without images", "answer": "-", "evidence_pages": [1]},
    ]
    ann = root / "annotations" / "qa" / "test.jsonl"
    ann.parent.mkdir(parents=True)
    ann.write_text("".join(json.dumps(obj) + "\n" for obj in lines), encoding="utf-8")
    return ann, images


def test_slidevqa_conversion(tmp_path: Path) -> None:
    from dse.eval.slidevqa import convert_slidevqa, slide_number

    ann, images = _slidevqa_miniature(tmp_path)
    out = convert_slidevqa(ann, images, tmp_path / "slidevqa", split="test")
    ds = load_local_dataset(out, "test")
    assert [c.id for c in ds.corpus] == ["alpha_1", "alpha_2", "alpha_3", "beta_1", "beta_2", "gamma_1"]
    assert [(q.id, q.text) for q in ds.queries] == [
        ("7", "What is on slide 2?"),
        ("8", "Compare slides 1 and 3"),
        ("9", "Slides 2 and 3?"),
    ]
    assert ds.qrels == {"7": {"alpha_2": 1}, "8": {"alpha_1": 1, "alpha_3": 1}, "9": {"beta_2": 1}}
    by_id = ds.corpus_by_id()
    assert by_id["alpha_3"].image.name == "alpha-deck-3-1024.jpg" and by_id["beta_2"].image.name == "slide_2.png"
    assert _pixel(by_id["alpha_2"].image)[0] < 60  # slide 2 of alpha is the green one

    only = load_local_dataset(convert_slidevqa(ann, images, tmp_path / "q", corpus_scope="questions"))
    assert "gamma_1" not in {c.id for c in only.corpus} and len(only.corpus) == 5
    assert (
        slide_number("x-deck-2019-12-1024.jpg"),
        slide_number("Slide 4.PNG"),
        slide_number("p07.jpg"),
        slide_number("cover.jpg"),
    ) == (12, 4, 7, None)


def test_slidevqa_malformed_line_names_it(tmp_path: Path) -> None:
    from dse.eval.slidevqa import convert_slidevqa

    ann, images = _slidevqa_miniature(tmp_path)
    lines = ann.read_text().splitlines()
    broken = lines[:2] + ['{"qa_id": 9, "deck_name": "beta", "question": '] + lines[3:]
    ann.write_text("\n".join(broken) + "\n")
    with pytest.raises(DatasetFormatError, match=r"test\.jsonl:3: malformed JSON"):
        convert_slidevqa(ann, images, tmp_path / "out")
    ann.write_text(
        "\n".join(lines[:3] + ['{"qa_id": 12, "deck_name": "beta", "question": "q", "evidence_pages": [0]}']) + "\n"
    )
    with pytest.raises(DatasetFormatError, match=r"test\.jsonl:4: 'evidence_pages' must be"):
        convert_slidevqa(ann, images, tmp_path / "out")
    ann.write_text(lines[0] + "\n" + '{"qa_id": 13, "question": "no deck", "evidence_pages": [1]}\n')
    with pytest.raises(DatasetFormatError, match=r"test\.jsonl:2: missing field\(s\) deck_name"):
        convert_slidevqa(ann, images, tmp_path / "out")
    assert not (tmp_path / "out" / "corpus.jsonl").exists()


def test_slidevqa_convert_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dse.cli import main

    ann, images = _slidevqa_miniature(tmp_path)
    out = tmp_path / "slidevqa"
    assert main(["eval", "convert-slidevqa", str(ann), str(images), str(out)]) == 0
    assert "6 slides, 3 questions, 4 relevant slides (split test)" in capsys.readouterr().out
    assert load_local_dataset(out, "test").qrels["8"] == {"alpha_1": 1, "alpha_3": 1}
    ann.write_text('{"qa_id": 1, "deck_name": "alpha", "question": \n', encoding="utf-8")
    assert main(["eval", "convert-slidevqa", str(ann), str(images), str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dse eval convert-slidevqa: error:") and "test.jsonl:1: malformed JSON" in err
    assert len(err.splitlines()) == 1
