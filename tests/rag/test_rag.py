"""Visual RAG (dse.rag: answer_question, ask; dse ask) end to end on tiny offline models.

The tiny generator has random weights: its answers are random tokens. The tests check
structure: which pages are retrieved and given to the model (the actual model inputs),
determinism, citation handling, errors and the CLI.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image
from support.docs import make_pdf

from dse.cli import main
from dse.collection import Collection
from dse.rag import (
    Answer,
    Generator,
    GeneratorError,
    NoPagesError,
    RAGError,
    answer_question,
    ask,
    build_answer,
    parse_citations,
)
from dse.rag.answer import load_page_images
from renderers import RenderSettings

QUESTION = "What was the revenue in the last quarter?"
MAX_NEW_TOKENS = 12


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir) -> Collection:
    """A DSE collection of a 4-page and a 3-page PDF (tagged kind=report / kind=notes)."""
    docs = tmp_path_factory.mktemp("rag-docs")
    make_pdf(docs / "report.pdf", 4, seed=3)
    make_pdf(docs / "notes.pdf", 3, seed=4, title="Notes")
    col = Collection.create(
        tmp_path_factory.mktemp("rag-col") / "c", model=str(tiny_model_dir("dse-qwen2")), device="cpu"
    )
    for path, kind in ((docs / "report.pdf", "report"), (docs / "notes.pdf", "notes")):
        report = col.add(path, render_settings=RenderSettings(dpi=36), meta={"kind": kind}, progress=False)
        assert not report.failures, report.failures
    return col


@pytest.fixture(scope="module")
def generator_dir(tiny_model_dir) -> Path:
    return tiny_model_dir("qwen2-vl-instruct")


@pytest.fixture(scope="module")
def generator(generator_dir: Path) -> Generator:
    return Generator.load(str(generator_dir), device="cpu", max_new_tokens=MAX_NEW_TOKENS)


class GenerateSpy:
    """Wraps ``model.generate`` and records the tensors it was given (the real call still runs)."""

    def __init__(self, gen: Generator, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[dict] = []
        original = gen.model.generate

        def spy(*args, **kwargs):
            self.calls.append({k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()})
            return original(*args, **kwargs)

        monkeypatch.setattr(gen.model, "generate", spy)


def _open_rgb(path: str) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


# ----------------------------------------------------------------- answer_question


def test_answer_uses_the_top_k_pages_in_rank_order(
    collection: Collection, generator: Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = GenerateSpy(generator, monkeypatch)
    expected = collection.search(QUESTION, k=3)
    assert len(expected) == 3
    ans = answer_question(collection, QUESTION, generator=generator, k=3)

    assert isinstance(ans, Answer) and isinstance(ans.answer, str) and ans.answer.strip()
    assert ans.question == QUESTION and ans.generator == generator.name
    assert [(h.page_id, h.score) for h in ans.pages] == [(h.page_id, h.score) for h in expected]
    assert [h.rank for h in ans.pages] == [1, 2, 3]
    assert set(ans.timings) == {"retrieve", "generate", "total"}

    # The model received exactly these three page images, in rank order.
    assert len(spy.calls) == 1
    given = spy.calls[0]
    tok = generator.processor.tokenizer
    ids = given["input_ids"][0].tolist()
    assert ids.count(tok.convert_tokens_to_ids("<|vision_start|>")) == 3
    grid = given["image_grid_thw"]
    assert grid.shape == (3, 3)
    merge = generator.processor.image_processor.merge_size
    assert ids.count(tok.convert_tokens_to_ids("<|image_pad|>")) == int(grid.prod(dim=1).sum()) // merge**2
    ref = generator.prepare(QUESTION, [_open_rgb(h.image_path) for h in expected])
    assert torch.equal(given["image_grid_thw"], ref["image_grid_thw"])
    assert torch.equal(given["pixel_values"], ref["pixel_values"])
    assert torch.equal(given["input_ids"], ref["input_ids"])
    # ... and the check has power: the same pages in another order are different inputs.
    shuffled = generator.prepare(QUESTION, [_open_rgb(h.image_path) for h in reversed(expected)])
    assert not torch.equal(given["pixel_values"], shuffled["pixel_values"])

    # The prompt labels the pages [1]..[3], asks for citations and carries the question.
    prompt = tok.decode(ids)
    assert prompt.index("[1]") < prompt.index("[2]") < prompt.index("[3]") < prompt.index(QUESTION)
    assert "<|im_start|>system\nYou are a helpful assistant.<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    # The answer is the decoding of the new tokens only.
    assert ans.answer == generator.generate(QUESTION, [_open_rgb(h.image_path) for h in expected])


def test_greedy_answers_are_deterministic_and_stream_matches(collection: Collection, generator: Generator) -> None:
    first = answer_question(collection, QUESTION, generator=generator, k=2)
    second = answer_question(collection, QUESTION, generator=generator, k=2)
    assert first.answer == second.answer
    assert [h.page_id for h in first.pages] == [h.page_id for h in second.pages]
    images = [_open_rgb(h.image_path) for h in first.pages]
    pieces = list(generator.stream(QUESTION, images))
    assert len(pieces) >= 1 and all(isinstance(p, str) for p in pieces)
    assert "".join(pieces).strip() == first.answer


def test_k_and_where_select_the_pages(
    collection: Collection, generator: Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = GenerateSpy(generator, monkeypatch)
    ans = answer_question(collection, QUESTION, generator=generator, k=5, where={"kind": "notes"})
    assert len(ans.pages) == 3  # only the 3 pages of the notes match the filter
    assert {h.meta["kind"] for h in ans.pages} == {"notes"}
    assert spy.calls[-1]["image_grid_thw"].shape[0] == 3
    ans = answer_question(collection, QUESTION, generator=generator, k=1)
    assert len(ans.pages) == 1 and ans.pages[0].page_id == collection.search(QUESTION, k=1)[0].page_id
    assert spy.calls[-1]["image_grid_thw"].shape[0] == 1


@pytest.mark.parametrize("question", ["", "   \n"])
def test_empty_question_is_a_clear_error(collection: Collection, generator: Generator, question: str) -> None:
    with pytest.raises(RAGError, match="empty question"):
        answer_question(collection, question, generator=generator)
    with pytest.raises(GeneratorError, match="empty question"):
        generator.generate(question, [Image.new("RGB", (64, 64))])


@pytest.mark.parametrize("k", [0, -2, 2.5, True])
def test_bad_k_is_a_clear_error(collection: Collection, generator: Generator, k) -> None:
    with pytest.raises(RAGError, match="k must be an integer of at least 1"):
        answer_question(collection, QUESTION, generator=generator, k=k)


def test_no_matching_page_is_a_clear_error(collection: Collection, generator: Generator) -> None:
    with pytest.raises(NoPagesError, match="no page matches the filter"):
        answer_question(collection, QUESTION, generator=generator, where={"kind": "nothing"})


def test_unreadable_page_image_is_skipped(collection: Collection, tmp_path: Path) -> None:
    hits = collection.search(QUESTION, k=3)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    damaged = [
        hits[0],
        replace(hits[1], image_path=str(tmp_path / "missing.png")),
        replace(hits[2], image_path=str(broken)),
    ]
    kept, images = load_page_images(damaged)
    assert [h.page_id for h in kept] == [hits[0].page_id]
    assert len(images) == 1 and images[0].mode == "RGB"
    assert images[0].size == _open_rgb(hits[0].image_path).size


def test_bad_images_are_rejected_by_the_generator(generator: Generator) -> None:
    with pytest.raises(GeneratorError, match="not a PIL image"):
        generator.generate(QUESTION, ["page.png"])  # type: ignore[list-item]
    with pytest.raises(GeneratorError, match="no page images"):
        generator.generate(QUESTION, [])
    with pytest.raises(GeneratorError, match="aspect ratio"):
        generator.generate(QUESTION, [Image.new("RGB", (4000, 10))])


# ----------------------------------------------------------------------- citations


def test_parse_citations_forms_and_ranges() -> None:
    text = "Revenue grew [2]. Costs fell [1, 3] and [p. 2]; see also [Pages 4 and 1], [2-3] and [9]. x[0]"
    assert parse_citations(text, 4) == [2, 1, 3, 4]
    assert parse_citations("no citations here (1) {2} 3", 3) == []
    assert parse_citations("[3][1]", 3) == [3, 1]
    assert parse_citations("[1-3]", 2) == [1, 2]
    assert parse_citations("[2023]", 3) == []


def test_build_answer_maps_citations_to_pages(collection: Collection) -> None:
    pages = collection.search(QUESTION, k=3)
    ans = build_answer(QUESTION, "It rose by 5% [3], as the table shows [1].", pages, generator="g")
    assert ans.citations == [3, 1]
    assert [h.page_id for h in ans.cited_pages] == [pages[2].page_id, pages[0].page_id]
    assert ans.cited_pages_source == "citations"
    d = json.loads(json.dumps(ans.to_dict()))
    assert [p["number"] for p in d["pages"]] == [1, 2, 3]
    assert [p["cited"] for p in d["pages"]] == [True, False, True]
    assert [p["number"] for p in d["cited_pages"]] == [3, 1]
    assert {"source", "page", "score", "image_path", "page_id"} <= set(d["pages"][0])

    none = build_answer(QUESTION, "It rose by 5% [7].", pages)  # out of range: not a citation
    assert none.citations == [] and none.cited_pages_source == "all_retrieved"
    assert [h.page_id for h in none.cited_pages] == [h.page_id for h in pages]


# ----------------------------------------------------------------------- loading


def test_generator_load_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, generator_dir: Path) -> None:
    with pytest.raises(GeneratorError, match="does not exist"):
        Generator.load(str(tmp_path / "nowhere"), device="cpu")
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(GeneratorError, match="not a Qwen2-VL / Qwen2.5-VL model"):
        Generator.load(str(bert), device="cpu")
    with pytest.raises(GeneratorError, match="max_new_tokens"):
        Generator.load(str(generator_dir), device="cpu", max_new_tokens=0)
    with pytest.raises(GeneratorError, match="min_pixels <= max_pixels"):
        Generator.load(str(generator_dir), device="cpu", min_pixels=1000, max_pixels=10)
    no_template = tmp_path / "base"
    shutil.copytree(generator_dir, no_template)
    (no_template / "chat_template.jinja").unlink()
    with pytest.raises(GeneratorError, match="no chat template"):
        Generator.load(str(no_template), device="cpu")

    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    with pytest.raises(GeneratorError) as info:
        Generator.load("Qwen/Qwen2-VL-2B-Instruct", device="cpu")
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("cannot reach the Hugging Face hub to download 'Qwen/Qwen2-VL-2B-Instruct'")
    assert "--generator" in msg and "--model" not in msg


def test_pixel_budget_caps_visual_tokens(generator_dir: Path) -> None:
    gen = Generator.load(
        str(generator_dir), device="cpu", max_new_tokens=2, min_pixels=4 * 28 * 28, max_pixels=16 * 28 * 28
    )
    batch = gen.prepare(QUESTION, [Image.new("RGB", (1200, 1600), "white")])
    tokens = int(batch["image_grid_thw"].prod()) // gen.processor.image_processor.merge_size**2
    assert 4 <= tokens <= 16


def test_qwen2_5_vl_instruct_generator(collection: Collection, tiny_model_dir) -> None:
    gen = Generator.load(str(tiny_model_dir("qwen2.5-vl-instruct")), device="cpu", max_new_tokens=6)
    assert type(gen.model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    ans = answer_question(collection, QUESTION, generator=gen, k=2)
    assert isinstance(ans.answer, str) and len(ans.pages) == 2
    assert ans.answer == answer_question(collection, QUESTION, generator=gen, k=2).answer


# ---------------------------------------------------------------- dse.rag.ask


def test_ask_loads_the_generator_once_per_collection(
    collection: Collection, generator_dir: Path, generator: Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[tuple[str, str]] = []
    real_load = Generator.load

    def counting_load(name: str, **kwargs) -> Generator:
        loads.append((name, kwargs["device"]))
        gen = real_load(name, **kwargs)
        assert gen.max_new_tokens == 256  # the default
        gen.max_new_tokens = MAX_NEW_TOKENS  # keep the rest of the test fast
        return gen

    monkeypatch.setattr(Generator, "load", staticmethod(counting_load))
    first = ask(collection, QUESTION, k=2, generator=str(generator_dir))
    assert isinstance(first.answer, str) and first.generator == str(generator_dir)
    assert [h.page_id for h in first.pages] == [h.page_id for h in collection.search(QUESTION, k=2)]
    assert loads == [(str(generator_dir), collection.device)]
    second = ask(collection, QUESTION, k=2, generator=str(generator_dir))
    assert len(loads) == 1  # reused
    assert second.answer == first.answer
    # a Generator object is used as given (same weights, same greedy answer)
    assert ask(collection, QUESTION, k=2, generator=generator).answer == second.answer
    assert len(loads) == 1
    with pytest.raises(RAGError, match="empty question"):
        ask(collection, " ", generator="Qwen/never-loaded")  # validated before any model load
    with pytest.raises(RAGError, match="k must be"):
        ask(collection, QUESTION, k=0, generator="Qwen/never-loaded")
    assert len(loads) == 1
    # another collection object (even of the same directory) loads its own
    with Collection.open(collection.directory, device="cpu") as other:
        ask(other, QUESTION, k=1, generator=str(generator_dir))
    assert len(loads) == 2


# --------------------------------------------------------------------------- CLI


def test_cli_ask_json_and_text(collection: Collection, generator_dir: Path, capsys: pytest.CaptureFixture) -> None:
    args = [
        "ask",
        "--collection",
        str(collection.directory),
        QUESTION,
        "-k",
        "2",
        "--generator",
        str(generator_dir),
        "--device",
        "cpu",
        "--max-new-tokens",
        str(MAX_NEW_TOKENS),
    ]
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = collection.search(QUESTION, k=2)
    assert out["question"] == QUESTION and isinstance(out["answer"], str) and out["answer"]
    assert [p["page_id"] for p in out["pages"]] == [h.page_id for h in expected]
    assert all(Path(p["image_path"]).is_file() for p in out["pages"])
    assert out["cited_pages_source"] in ("citations", "all_retrieved")
    assert main(args) == 0
    text = capsys.readouterr().out
    assert out["answer"] in text
    assert "[1]" in text and expected[0].source in text and f"p.{expected[0].page}" in text


@pytest.mark.parametrize(
    "extra, code, message",
    [
        (["-k", "0"], 2, "-k must be an integer of at least 1"),
        (["--where", "kind=nothing"], 1, "no page matches the filter"),
        (["--where", "novalue"], 2, "--where: malformed filter 'novalue'"),
        (["--max-new-tokens", "0"], 2, "--max-new-tokens"),
    ],
)
def test_cli_ask_errors(
    collection: Collection,
    generator_dir: Path,
    capsys: pytest.CaptureFixture,
    extra: list[str],
    code: int,
    message: str,
) -> None:
    rc = main(
        [
            "ask",
            "--collection",
            str(collection.directory),
            QUESTION,
            "--generator",
            str(generator_dir),
            "--device",
            "cpu",
            *extra,
        ]
    )
    err = capsys.readouterr().err
    assert rc == code
    lines = [line for line in err.splitlines() if line.startswith("dse ask: error:")]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in err


def test_cli_ask_empty_question_missing_collection_and_offline_hub(
    collection: Collection, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["ask", "--collection", str(collection.directory), "  "]) == 2
    assert "empty question" in capsys.readouterr().err
    assert main(["ask", "--collection", str(tmp_path / "none"), QUESTION]) == 3
    assert "does not exist" in capsys.readouterr().err

    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    assert main(["ask", "--collection", str(collection.directory), QUESTION, "--device", "cpu"]) == 3
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(err) == 1 and err[0].startswith("dse ask: error: cannot reach the Hugging Face hub")
    assert "Qwen/Qwen2-VL-2B-Instruct" in err[0] and "--generator" in err[0]
