"""Tiny offline ColPali (PaliGemma) and ColIdefics3 (ColSmol) checkpoints.

Each test builds its checkpoint at test time (random weights, locally trained
tokenizer) and loads it back with colpali-engine's own classes while the hub is
unreachable on purpose (``HF_HUB_OFFLINE=1`` and no network sockets).
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from dse.testing import tiny_idefics3, tiny_paligemma

COLPALI_DOC_PROMPT = "<image><bos>Describe the image."
COLSMOL_DOC_PROMPT = "<|im_start|>User:<image>Describe the image.<end_of_utterance>\nAssistant:"


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """Hub offline mode plus a socket guard: any attempt to reach the network fails."""
    import huggingface_hub.constants as hf_constants

    def refuse(self: socket.socket, address: object) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise OSError(f"network access attempted during an offline test: {address!r}")
        return real_connect(self, address)

    real_connect = socket.socket.connect
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(hf_constants, "HF_HUB_OFFLINE", True)
        mp.setattr(socket.socket, "connect", refuse)
        yield


def page_images() -> list[Image.Image]:
    """Four pages of different sizes and aspect ratios (portrait, landscape, tiny, grey)."""
    rng = np.random.default_rng(0)
    pages = []
    for w, h in [(90, 130), (160, 70), (20, 40)]:
        img = Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))
        ImageDraw.Draw(img).rectangle([w // 4, h // 4, w // 2, h // 2], fill=(255, 255, 255))
        pages.append(img)
    pages.append(Image.new("L", (64, 48), 128))  # grey-scale input is converted to RGB
    return pages


QUERIES = ["what is the revenue in 2021?", "hello", "Zürich energy report — total €"]


@pytest.fixture(scope="module")
def colpali_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with offline():
        return tiny_paligemma.build(tmp_path_factory.mktemp("tiny-colpali"))


@pytest.fixture(scope="module")
def colidefics3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with offline():
        return tiny_idefics3.build(tmp_path_factory.mktemp("tiny-colidefics3"))


def load(family: str, path: Path) -> tuple[torch.nn.Module, object]:
    """Load model (fp32, eager attention) and processor with colpali-engine, offline."""
    from colpali_engine.models import ColIdefics3, ColIdefics3Processor, ColPali, ColPaliProcessor

    model_cls, proc_cls = {"colpali": (ColPali, ColPaliProcessor), "colidefics3": (ColIdefics3, ColIdefics3Processor)}[
        family
    ]
    with offline():
        processor = proc_cls.from_pretrained(path)
        model = model_cls.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    return model, processor


@pytest.fixture(params=["colpali", "colidefics3"])
def family_dir(request: pytest.FixtureRequest) -> tuple[str, Path]:
    return request.param, request.getfixturevalue(f"{request.param}_dir")


# --------------------------------------------------------------------- layout
def test_snapshot_layout(family_dir: tuple[str, Path]) -> None:
    family, path = family_dir
    names = {p.name for p in path.iterdir()}
    expected = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "processor_config.json"}
    if family == "colidefics3":
        expected.add("chat_template.jinja")
    assert expected <= names, f"missing {expected - names}"
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl", ".pickle"))], names
    config = json.loads((path / "config.json").read_text())
    arch, model_type = {"colpali": ("ColPali", "paligemma"), "colidefics3": ("ColIdefics3", "idefics3")}[family]
    assert config["architectures"] == [arch]
    assert config["model_type"] == model_type
    assert config["text_config"]["hidden_size"] == 64
    assert config["text_config"]["num_hidden_layers"] == 2
    assert config["vision_config"]["num_hidden_layers"] == 1


def test_build_is_deterministic(tmp_path: Path) -> None:
    with offline():
        a = tiny_paligemma.build(tmp_path / "a")
        b = tiny_paligemma.build(tmp_path / "b")
        c = tiny_paligemma.build(tmp_path / "c", seed=1)
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()


def test_builders_reject_bad_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multiple of 14"):
        tiny_paligemma.build(tmp_path / "p", image_size=50)
    with pytest.raises(ValueError, match="multiple of 16"):
        tiny_idefics3.build(tmp_path / "i", vision_image_size=40)
    with pytest.raises(ValueError, match="unknown size 'huge'"):
        tiny_paligemma.build(tmp_path / "p", size="huge")
    with pytest.raises(ValueError, match="unknown size 'huge'"):
        tiny_idefics3.build(tmp_path / "i", size="huge")


# ------------------------------------------------------------------ tokenizers
def test_paligemma_tokenizer(colpali_dir: Path) -> None:
    from transformers import AutoTokenizer

    with offline():
        tok = AutoTokenizer.from_pretrained(colpali_dir)
    config = json.loads((colpali_dir / "config.json").read_text())
    assert [tok.convert_tokens_to_ids(t) for t in ("<pad>", "<eos>", "<bos>", "<unk>")] == [0, 1, 2, 3]
    assert (tok.pad_token, tok.bos_token, tok.eos_token) == ("<pad>", "<bos>", "<eos>")
    assert tok.convert_tokens_to_ids("<image>") == config["image_token_index"]
    assert tok.convert_tokens_to_ids("<loc0000>") != tok.unk_token_id
    assert tok.convert_tokens_to_ids("<seg127>") != tok.unk_token_id
    assert len(tok) == config["text_config"]["vocab_size"]
    assert tok.padding_side == "right"
    ids = tok("<image><image><bos>x", add_special_tokens=False)["input_ids"]
    assert ids[:3] == [config["image_token_index"]] * 2 + [2]
    text = "Zürich energy report — total 42 €\nnext line"  # byte fallback for unseen characters
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_idefics3_tokenizer(colidefics3_dir: Path) -> None:
    from transformers import AutoTokenizer

    with offline():
        tok = AutoTokenizer.from_pretrained(colidefics3_dir)
    config = json.loads((colidefics3_dir / "config.json").read_text())
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == (
        "<|im_start|>",
        "<end_of_utterance>",
        "<|im_end|>",
        "<|endoftext|>",
    )
    for special in tiny_idefics3.IMAGE_SPECIALS:
        ids = tok(special, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and ids[0] != tok.unk_token_id, special
    assert tok.convert_tokens_to_ids("<image>") == config["image_token_id"]
    assert len(tok) == config["text_config"]["vocab_size"]
    assert tok.padding_side == "left"
    text = "Zürich energy report — total 42 €\nnext line"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_idefics3_chat_template_renders_colsmol_prompt(colidefics3_dir: Path) -> None:
    _, processor = load("colidefics3", colidefics3_dir)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]
    rendered = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered == COLSMOL_DOC_PROMPT


# ------------------------------------------------------------- prompts, forward
def test_published_prompts(colpali_dir: Path, colidefics3_dir: Path) -> None:
    _, pali = load("colpali", colpali_dir)
    assert pali.visual_prompt_prefix == COLPALI_DOC_PROMPT
    assert pali.query_prefix == ""
    assert pali.query_augmentation_token == "<pad>"
    _, smol = load("colidefics3", colidefics3_dir)
    assert smol.visual_prompt_prefix == COLSMOL_DOC_PROMPT
    assert smol.query_prefix == ""
    assert smol.query_augmentation_token == "<end_of_utterance>"


def test_colpali_document_and_query_tokens(colpali_dir: Path) -> None:
    _, processor = load("colpali", colpali_dir)
    n_img = processor.image_seq_length
    assert n_img == (56 // 14) ** 2
    batch = processor.process_images(page_images()[:1])
    tokens = processor.tokenizer.convert_ids_to_tokens(batch["input_ids"][0])
    # PaliGemmaProcessor expands <image>, inserts <bos> after the image block and appends "\n".
    assert tokens[:n_img] == ["<image>"] * n_img
    assert tokens[n_img : n_img + 2] == ["<bos>", "<bos>"]
    assert processor.tokenizer.decode(batch["input_ids"][0][n_img + 2 :]) == "Describe the image.\n"
    queries = processor.process_queries(["hello"])
    q_tokens = processor.tokenizer.convert_ids_to_tokens(queries["input_ids"][0])
    assert q_tokens[0] == "<bos>" and q_tokens[-10:] == ["<pad>"] * 10
    assert processor.tokenizer.decode(queries["input_ids"][0][1:-10]) == "hello"
    assert int(queries["attention_mask"].sum()) == len(q_tokens)  # augmentation tokens are attended


def test_idefics3_document_and_query_tokens(colidefics3_dir: Path) -> None:
    _, processor = load("colidefics3", colidefics3_dir)
    assert processor.image_seq_len == (32 // 8) ** 2 // 4
    page = page_images()[2]  # 20x40 -> upscaled to 32x64 -> 2 rows x 1 col of 32px tiles + global view
    batch = processor.process_images([page])
    tokens = processor.tokenizer.convert_ids_to_tokens(batch["input_ids"][0])
    assert tokens.count("<image>") == (2 * 1 + 1) * processor.image_seq_len
    assert [t for t in tokens if t.startswith("<row_")] == ["<row_1_col_1>", "<row_2_col_1>"]
    assert tokens.count("<global-img>") == 1
    decoded = processor.tokenizer.decode(batch["input_ids"][0])
    assert decoded.startswith("<|im_start|>User:<fake_token_around_image><row_1_col_1><image>")
    assert decoded.endswith("<fake_token_around_image>Describe the image.<end_of_utterance>\nAssistant:")
    assert tuple(batch["pixel_values"].shape) == (1, 3, 3, 32, 32)
    queries = processor.process_queries(["hello"])
    q_tokens = processor.tokenizer.convert_ids_to_tokens(queries["input_ids"][0])
    assert q_tokens[-10:] == ["<end_of_utterance>"] * 10
    assert processor.tokenizer.decode(queries["input_ids"][0][:-10]) == "hello"


def _check_multivectors(emb: torch.Tensor, mask: torch.Tensor) -> None:
    assert emb.ndim == 3 and emb.shape[:2] == mask.shape and emb.shape[2] == 128
    assert torch.isfinite(emb).all()
    norms = emb.norm(dim=-1)
    real = mask.bool()
    torch.testing.assert_close(norms[real], torch.ones_like(norms[real]), atol=1e-5, rtol=0)
    assert (norms[~real] == 0).all()


def test_forward_multivectors(family_dir: tuple[str, Path]) -> None:
    family, path = family_dir
    model, processor = load(family, path)
    pages = page_images()
    docs = processor.process_images(pages)
    queries = processor.process_queries(QUERIES)
    with torch.no_grad():
        d = model(**docs)
        q = model(**queries)
    _check_multivectors(d, docs["attention_mask"])
    _check_multivectors(q, queries["attention_mask"])
    assert d.shape[0] == len(pages) and q.shape[0] == len(QUERIES)
    # Image tokens per page: fixed for PaliGemma, tiles + global view for Idefics3.
    n_image = (docs["input_ids"] == processor.image_token_id).sum(dim=1).tolist()
    if family == "colpali":
        assert n_image == [processor.image_seq_length] * len(pages)
    else:
        # longest edge -> 64 px, then 32 px tiles: 2x2, 1x2, 2x1, 2x2 tiles, plus one global view each
        assert n_image == [(4 + 1) * 4, (2 + 1) * 4, (2 + 1) * 4, (4 + 1) * 4]
    # Different pages give different vectors; scores are finite MaxSim values.
    scores = processor.score_multi_vector(list(q), list(d))
    assert scores.shape == (len(QUERIES), len(pages)) and torch.isfinite(scores).all()
    assert not torch.allclose(d[0, -1], d[1, -1])


def test_reference_padding_invariance(family_dir: tuple[str, Path]) -> None:
    """colpali-engine on these checkpoints: batched (padded) == one at a time, real tokens only."""
    family, path = family_dir
    model, processor = load(family, path)
    with torch.no_grad():
        for inputs in (page_images(), QUERIES):
            prep = processor.process_images if inputs is not QUERIES else processor.process_queries
            batch = prep(inputs)
            full = model(**batch)
            for i, item in enumerate(inputs):
                single = prep([item])
                one = model(**single)[0][single["attention_mask"][0].bool()]
                many = full[i][batch["attention_mask"][i].bool()]
                assert one.shape == many.shape
                torch.testing.assert_close(many, one, atol=1e-5, rtol=0)


def test_hub_offline_env_is_honoured() -> None:
    """The guard used above really blocks the hub: a hub id cannot be resolved."""
    from transformers import AutoConfig

    with offline(), pytest.raises(OSError):
        AutoConfig.from_pretrained("vidore/colpali-v1.3-hf")
