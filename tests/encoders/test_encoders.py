"""Encoders end to end on offline tiny models: loading, detection, errors, batching, adapters.

Parity with the published reference recipes is in ``test_parity_qwen.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dse.encoders import Encoder, EncoderError, InvalidInput, UnsupportedImageMode
from dse.encoders.batching import OutOfMemory, run_batched
from dse.encoders.detection import UnknownFamily, detect_family
from dse.encoders.devices import resolve_runtime
from dse.encoders.sources import ModelNotFound, resolve_model

QWEN_FAMILIES = ["dse-qwen2", "dse-qwen2.5", "gme-qwen2", "colqwen2", "colqwen2.5"]

#: Mixed sizes (w, h): different visual token counts, hence different padding per batch.
SIZES = [(64, 48), (120, 160), (200, 120), (56, 56), (60, 280), (150, 150), (33, 77)]
QUERIES = [
    "revenue",
    "what was the total revenue of the company in 2021?",
    "a chart",
    "Where is the table of contents of this long annual report, and which page has the index?",
    "x",
    "battery pricing per kWh",
    "who signed the contract on page three",
]


def make_pages(sizes: list[tuple[int, int]] = SIZES, seed: int = 0) -> list[Image.Image]:
    """Random-content RGB images (distinct content -> distinct embeddings)."""
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return (a * b).sum(-1)


def assert_same_vectors(one, many, *, kind: str) -> None:
    """Single: row-wise cosine >= 0.9999; multi: same token counts and per-token cosine >= 0.9999."""
    if kind == "single":
        assert one.shape == many.shape
        assert cosine_rows(one, many).min() >= 0.9999
    else:
        assert len(one) == len(many)
        for x, y in zip(one, many, strict=True):
            assert x.shape == y.shape
            assert cosine_rows(x, y).min() >= 0.9999


def pooled(vectors, kind: str) -> np.ndarray:
    """One vector per input (mean of token vectors for multi) to compare different inputs."""
    if kind == "single":
        return vectors
    return np.stack([v.mean(0) for v in vectors])


@pytest.fixture(scope="module")
def encoders(tiny_model_dir):
    cache: dict[str, Encoder] = {}

    def get(family: str) -> Encoder:
        if family not in cache:
            cache[family] = Encoder.load(str(tiny_model_dir(family)), device="cpu")
        return cache[family]

    return get


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize("family", QWEN_FAMILIES)
def test_family_detected_and_settings(family: str, encoders) -> None:
    enc = encoders(family)
    assert enc.family == family
    assert enc.kind == ("multi" if family.startswith("col") else "single")
    s = enc.settings
    json.dumps(s)  # JSON-serialisable, stored with indexes
    for key in ("family", "model", "revision", "dim", "kind", "min_pixels", "max_pixels", "prompt_version"):
        assert key in s
    assert s["family"] == family and s["dim"] == enc.dim and s["kind"] == enc.kind
    assert s["revision"] is None  # a plain local directory has no commit hash
    expected_pixels = {
        "dse-qwen2": (28 * 28, 2560 * 28 * 28),
        "dse-qwen2.5": (28 * 28, 2560 * 28 * 28),
        "gme-qwen2": (256 * 28 * 28, 1280 * 28 * 28),
        "colqwen2": (56 * 56, 768 * 28 * 28),
        "colqwen2.5": (56 * 56, 768 * 28 * 28),  # the tiny processor saves 768 tokens max
    }[family]
    assert (s["min_pixels"], s["max_pixels"]) == expected_pixels
    assert enc.dim == (128 if enc.kind == "multi" else 64)


def test_tiny_cli_builds_a_loadable_snapshot(tmp_path: Path) -> None:
    from dse.testing.tiny import main

    out = tmp_path / "model"
    assert main(["dse-qwen2.5", str(out), "--seed", "3"]) == 0
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (out / name).is_file(), name
    assert detect_family(resolve_model(str(out))) == "dse-qwen2.5"
    enc = Encoder.load(str(out), device="cpu")
    vec = enc.encode_queries(["hello"])
    assert vec.shape == (1, 64) and np.isfinite(vec).all()


def test_gme_versus_dse_rule(tmp_path: Path, tiny_model_dir) -> None:
    gme = tiny_model_dir("gme-qwen2")
    plain = tmp_path / "plain-qwen2-vl"
    shutil.copytree(gme, plain)
    # the marker file that published GME snapshots carry
    assert detect_family(resolve_model(str(plain))) == "gme-qwen2"
    (plain / "gme_inference.py").unlink()
    assert detect_family(resolve_model(str(plain))) == "dse-qwen2"  # default for Qwen2-VL
    named = tmp_path / "my-GME-finetune"
    shutil.copytree(plain, named)
    assert detect_family(resolve_model(str(named))) == "gme-qwen2"  # the name rule
    # an explicit family always wins
    enc = Encoder.load(str(named), family="dse-qwen2", device="cpu")
    assert enc.family == "dse-qwen2"


def test_undetectable_and_unknown_family(tmp_path: Path, tiny_model_dir) -> None:
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
    with pytest.raises(UnknownFamily, match="cannot detect the model family"):
        Encoder.load(str(bert), device="cpu")
    with pytest.raises(UnknownFamily, match="unknown model family 'nope'"):
        Encoder.load(str(tiny_model_dir("dse-qwen2")), family="nope", device="cpu")


def test_missing_model_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="does not exist"):
        Encoder.load(str(tmp_path / "nowhere"), device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EncoderError, match="no config.json"):
        Encoder.load(str(tmp_path / "empty"), device="cpu")


def test_unreachable_hub_gives_one_clear_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants as hf_constants

    # Deterministic whatever the network: offline mode and an empty cache.
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    with pytest.raises(ModelNotFound) as info:
        Encoder.load("MrLight/dse-qwen2-2b-mrl-v1", device="cpu")
    msg = str(info.value)
    assert msg == (
        "cannot reach the Hugging Face hub to download 'MrLight/dse-qwen2-2b-mrl-v1'; "
        "pass --model /path/to/local/dir (a snapshot of MrLight/dse-qwen2-2b-mrl-v1)"
    )
    assert "\n" not in msg


def test_revision_from_hub_cache_snapshot(tmp_path: Path, tiny_model_dir) -> None:
    sha = "0123456789abcdef0123456789abcdef01234567"
    snap = tmp_path / "models--org--tiny" / "snapshots" / sha
    shutil.copytree(tiny_model_dir("colqwen2"), snap)
    enc = Encoder.load(str(snap), device="cpu")
    assert enc.settings["revision"] == sha


def test_runtime_rules() -> None:
    rt = resolve_runtime("cpu")
    assert (rt.device.type, rt.dtype, rt.attn_implementation) == ("cpu", torch.float32, "eager")
    if not torch.cuda.is_available():
        assert resolve_runtime("auto").device.type in ("cpu", "mps")
        with pytest.raises(EncoderError, match="CUDA is not available"):
            resolve_runtime("cuda")
    with pytest.raises(EncoderError, match="unknown dtype"):
        resolve_runtime("cpu", "int3")
    with pytest.raises(EncoderError, match="unknown device"):
        resolve_runtime("tpu-ish device")


def test_load_argument_errors(tiny_model_dir) -> None:
    path = str(tiny_model_dir("dse-qwen2"))
    with pytest.raises(EncoderError, match="dim must be between 1 and the model's hidden size 64"):
        Encoder.load(path, device="cpu", dim=65)
    with pytest.raises(EncoderError, match="min_pixels .* is larger than max_pixels"):
        Encoder.load(path, device="cpu", min_pixels=4 * 784, max_pixels=784)
    with pytest.raises(EncoderError, match="not supported by family 'dse-qwen2'"):
        Encoder.load(path, device="cpu", query_instruction="x")
    with pytest.raises(EncoderError, match="128-d token vectors"):
        Encoder.load(str(tiny_model_dir("colqwen2")), device="cpu", dim=64)


def test_visual_token_counts_match_the_published_figures(encoders, tiny_model_dir) -> None:
    def white(w: int, h: int) -> Image.Image:
        return Image.new("RGB", (w, h), "white")

    a4 = white(1191, 1684)  # A4 at 144 DPI
    for family in ("dse-qwen2", "dse-qwen2.5"):  # models.md: 672->576, 784->784, uncapped page -> at most 2560
        enc = encoders(family)
        assert [enc.visual_tokens(white(672, 672)), enc.visual_tokens(white(784, 784))] == [576, 784]
        assert 2400 < enc.visual_tokens(a4) <= 2560
        assert enc.visual_tokens(white(5000, 7000)) <= 2560
    gme = encoders("gme-qwen2")  # 256..1280 image tokens
    assert gme.visual_tokens(white(672, 672)) == 576
    assert gme.visual_tokens(white(100, 100)) >= 256
    assert 1200 < gme.visual_tokens(a4) <= 1280
    for family in ("colqwen2", "colqwen2.5"):  # capped at 768
        enc = encoders(family)
        assert enc.visual_tokens(white(672, 672)) == 576
        assert 700 < enc.visual_tokens(a4) <= 768
    capped = Encoder.load(str(tiny_model_dir("dse-qwen2")), device="cpu", max_pixels=256 * 28 * 28)
    assert capped.settings["max_pixels"] == 256 * 28 * 28
    assert 200 < capped.visual_tokens(a4) <= 256  # smart resize floors each side to 28 px
    assert capped.encode_documents([a4]).shape == (1, 64)


# --------------------------------------------------------------------------- inputs


def test_input_errors(encoders) -> None:
    enc = encoders("dse-qwen2")
    page = make_pages([(40, 40)])[0]
    with pytest.raises(InvalidInput, match=r"query #1 is empty \(whitespace only\)"):
        enc.encode_queries(["ok", "   "])
    with pytest.raises(InvalidInput, match="query #0 is empty"):
        enc.encode_queries([""])
    with pytest.raises(InvalidInput, match="neither was given"):
        enc.encode_queries()
    with pytest.raises(InvalidInput, match="got 2 texts and 1 images"):
        enc.encode_queries(["a", "b"], [page])
    with pytest.raises(InvalidInput, match=r"page image #1 has zero size \(0x10 px\)"):
        enc.encode_documents([page, Image.new("RGB", (0, 10))])
    with pytest.raises(UnsupportedImageMode, match="mode 'I;16'"):
        enc.encode_documents([Image.new("I;16", (32, 32))])
    with pytest.raises(InvalidInput, match="is a str, expected a PIL.Image.Image"):
        enc.encode_documents(["page.png"])  # type: ignore[list-item]
    with pytest.raises(InvalidInput, match="must be a sequence"):
        enc.encode_queries("a single string")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="text document #0 is empty"):
        enc.encode_text_documents([" \n"])
    with pytest.raises(EncoderError, match="aspect ratio above 200"):
        enc.encode_documents([Image.new("RGB", (2010, 10))])
    assert enc.encode_documents([]).shape == (0, enc.dim)
    assert encoders("colqwen2").encode_queries([]) == []


def test_common_modes_are_converted(encoders) -> None:
    enc = encoders("dse-qwen2")
    rgb = make_pages([(48, 40)])[0]
    rgba = rgb.convert("RGBA")
    rgba.putalpha(128)
    expected_rgba = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    got = enc.encode_documents([rgb.convert("L"), rgba, rgb.convert("P")])
    want = enc.encode_documents([rgb.convert("L").convert("RGB"), expected_rgba, rgb.convert("P").convert("RGB")])
    np.testing.assert_allclose(got, want, atol=1e-5)


# --------------------------------------------------------------------------- batching


@pytest.mark.parametrize("family", QWEN_FAMILIES)
def test_results_do_not_depend_on_batch_size_or_order(family: str, encoders) -> None:
    enc = encoders(family)
    pages = make_pages()
    one = [enc.encode_documents([p], batch_size=1) for p in pages]
    one = np.concatenate(one) if enc.kind == "single" else [x[0] for x in one]
    many = enc.encode_documents(pages, batch_size=7)
    assert_same_vectors(one, many, kind=enc.kind)
    # distinct pages get distinct embeddings, so the check above has power
    p = pooled(many, enc.kind)
    sims = cosine_rows(p[:, None, :], p[None, :, :])
    assert sims[~np.eye(len(pages), dtype=bool)].min() < 0.99

    q_one = [enc.encode_queries([q], batch_size=1) for q in QUERIES]
    q_one = np.concatenate(q_one) if enc.kind == "single" else [x[0] for x in q_one]
    q_many = enc.encode_queries(QUERIES, batch_size=7)
    assert_same_vectors(q_one, q_many, kind=enc.kind)
    # reversed input order: same vectors, reversed
    q_rev = enc.encode_queries(QUERIES[::-1], batch_size=3)
    assert_same_vectors(q_many[::-1], q_rev, kind=enc.kind)

    fused_one = [enc.encode_queries([q], [p], batch_size=1) for q, p in zip(QUERIES[:3], pages[:3], strict=True)]
    fused_one = np.concatenate(fused_one) if enc.kind == "single" else [x[0] for x in fused_one]
    fused_many = enc.encode_queries(QUERIES[:3], pages[:3], batch_size=3)
    assert_same_vectors(fused_one, fused_many, kind=enc.kind)


@pytest.mark.parametrize("family", ["dse-qwen2", "colqwen2"])
def test_out_of_memory_halves_the_batch(family: str, encoders, monkeypatch: pytest.MonkeyPatch) -> None:
    enc = encoders(family)
    pages = make_pages()
    expected = enc.encode_documents(pages, batch_size=7)
    real_forward = enc._forward
    calls: list[tuple[int, bool]] = []

    def flaky_forward(items):
        if len(items) > 2:
            calls.append((len(items), False))
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        calls.append((len(items), True))
        return real_forward(items)

    monkeypatch.setattr(enc, "_forward", flaky_forward)
    got = enc.encode_documents(pages, batch_size=7)
    assert calls[:2] == [(7, False), (3, False)]  # 7 -> 3 -> 1
    assert all(ok for _, ok in calls[2:]) and {n for n, _ in calls[2:]} == {1}
    assert sum(n for n, ok in calls if ok) == len(pages)
    assert_same_vectors(expected, got, kind=enc.kind)

    def always_oom(items):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(enc, "_forward", always_oom)
    with pytest.raises(OutOfMemory, match="single input"):
        enc.encode_documents(pages[:2], batch_size=2)


def test_run_batched_restores_order_and_groups_by_size() -> None:
    seen: list[list[int]] = []

    def forward(batch: list[int]) -> list[int]:
        seen.append(list(batch))
        return [x * 10 for x in batch]

    items = [5, 1, 9, 3, 7, 2]
    assert run_batched(items, [float(x) for x in items], forward, batch_size=2) == [x * 10 for x in items]
    assert seen == [[9, 7], [5, 3], [2, 1]]  # largest first, similar sizes together


def test_progress_bar_goes_to_stderr(encoders, capsys: pytest.CaptureFixture[str]) -> None:
    encoders("dse-qwen2").encode_documents(make_pages()[:3], batch_size=1, progress=True)
    err = capsys.readouterr().err
    assert "pages" in err and "3/3" in err


def test_matryoshka_slices_then_normalises(tiny_model_dir, encoders) -> None:
    full = encoders("dse-qwen2")
    small = Encoder.load(str(tiny_model_dir("dse-qwen2")), device="cpu", dim=16)
    assert small.dim == 16 and small.settings["dim"] == 16
    pages = make_pages()[:3]
    # the full vectors are normalised over 64 values; renormalising their first 16 equals dim=16
    f = full.encode_documents(pages)
    s = small.encode_documents(pages)
    ref = f[:, :16] / np.linalg.norm(f[:, :16], axis=1, keepdims=True)
    np.testing.assert_allclose(s, ref, atol=1e-5)
    assert np.allclose(np.linalg.norm(s, axis=1), 1.0, atol=1e-5)


def test_gme_query_instruction_is_a_setting(tiny_model_dir, encoders) -> None:
    default = encoders("gme-qwen2")
    assert default.settings["query_instruction"] == "Find an image that matches the given text."
    custom = Encoder.load(str(tiny_model_dir("gme-qwen2")), device="cpu", query_instruction="Find the page.")
    assert custom.settings["query_instruction"] == "Find the page."
    a = default.encode_queries(["revenue by year"])
    b = custom.encode_queries(["revenue by year"])
    assert cosine_rows(a, b)[0] < 0.9999  # the instruction is part of the input
    # candidates do not use the query instruction
    np.testing.assert_allclose(
        default.encode_text_documents(["revenue by year"]), custom.encode_text_documents(["revenue by year"]), atol=1e-6
    )


# --------------------------------------------------------------------------- adapters


def _perturbed_lora(model, seed: int = 1):
    from peft import LoraConfig, get_peft_model

    targets = ["q_proj", "v_proj"] + (["custom_text_proj"] if hasattr(model, "custom_text_proj") else [])
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:  # B starts at zero: make the adapter do something
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
    return peft_model.eval()


@pytest.mark.parametrize("family", ["dse-qwen2", "colqwen2"])
def test_adapter_round_trip(family: str, tiny_model_dir, encoders, tmp_path: Path) -> None:
    base_dir = tiny_model_dir(family)
    base = encoders(family)
    pages = make_pages()[:3]
    queries = QUERIES[:3]

    in_memory = Encoder.load(str(base_dir), device="cpu")
    peft_model = _perturbed_lora(in_memory.model)
    in_memory.model = peft_model.get_base_model()  # LoRA layers injected in place
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(adapter_dir)

    loaded = Encoder.load(str(base_dir), device="cpu", adapter=str(adapter_dir))
    assert loaded.settings["adapter"] == str(adapter_dir.resolve())
    for encode in (lambda e: e.encode_documents(pages), lambda e: e.encode_queries(queries)):
        want, got, before = encode(in_memory), encode(loaded), encode(base)
        if base.kind == "single":
            np.testing.assert_allclose(got, want, atol=1e-6)
            assert np.abs(got - before).max() > 1e-3  # the adapter changes the embeddings
        else:
            for g, w in zip(got, want, strict=True):
                np.testing.assert_allclose(g, w, atol=1e-6)
            assert max(np.abs(g - b).max() for g, b in zip(got, before, strict=True)) > 1e-3

    # An adapter repo as the model itself (the layout of vidore/colqwen2-v1.0): base from adapter_config.json.
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert Path(cfg["base_model_name_or_path"]) == base_dir
    as_repo = Encoder.load(str(adapter_dir), device="cpu")
    assert as_repo.family == family
    got = as_repo.encode_queries(queries)
    want = in_memory.encode_queries(queries)
    if base.kind == "single":
        np.testing.assert_allclose(got, want, atol=1e-6)
    else:
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, atol=1e-6)
