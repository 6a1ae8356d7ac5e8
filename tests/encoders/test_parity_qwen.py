"""Parity: our Qwen-based encoders vs the published reference recipes, on tiny offline weights.

Each reference is written out plainly here, step by step, from the model card or the
reference code (see /work/shared/specs/models.md), run in float32 with eager attention
on ONE batch holding all inputs (our encoders sort by size and batch differently).
Max abs difference must be <= 1e-5.

* DSE (dse-qwen2, dse-qwen2.5): the ``MrLight/dse-qwen2-2b-mrl-v1`` model card.
* GME (gme-qwen2): ``gme_inference.py`` of ``Alibaba-NLP/gme-Qwen2-VL-2B-Instruct``.
* ColQwen2 / ColQwen2.5: colpali-engine's processor + model forward.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from dse.encoders import Encoder
from dse.encoders.hf import Item

ATOL = 1e-5
# The DSE/GME references pass min/max_pixels to AutoProcessor.from_pretrained as their cards do.
pytestmark = pytest.mark.filterwarnings("ignore:Passing `min_pixels` and `max_pixels`:FutureWarning")
QWEN_FAMILIES = ["dse-qwen2", "dse-qwen2.5", "gme-qwen2", "colqwen2", "colqwen2.5"]

#: models.md: the rendering of one user turn (image + "Query: hello"), generation prompt on.
MODELS_MD_RENDERING = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    "<|vision_start|><|image_pad|><|vision_end|>Query: hello<|im_end|>\n<|im_start|>assistant\n"
)

QUERIES = [
    "Where can we see Llama?",
    "What is the LLaMA AI model, and how many parameters does the largest version have?",
    "Zürich — €",
    "table 3",
]
TEXT_DOCS = [
    "The quarterly revenue grew by 12 percent.",
    "Short.",
    "A much longer text document that talks about batteries, pricing per kWh and the energy market in 2021.",
]


def pages() -> list[Image.Image]:
    """Pages of different sizes and aspect ratios (different visual token counts)."""
    rng = np.random.default_rng(11)
    out = []
    for w, h in [(140, 200), (96, 64), (56, 56), (250, 120), (45, 160)]:
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        ImageDraw.Draw(img).text((3, 3), "Total 42", fill=(0, 0, 0))
        out.append(img)
    return out


def assert_close_single(ours: np.ndarray, ref: torch.Tensor) -> None:
    ref_np = ref.float().cpu().numpy()
    assert ours.shape == ref_np.shape
    assert np.abs(ours - ref_np).max() <= ATOL


def assert_close_multi(ours: list[np.ndarray], ref: list[torch.Tensor]) -> None:
    assert len(ours) == len(ref)
    for o, r in zip(ours, ref, strict=True):
        r_np = r.float().cpu().numpy()
        assert o.shape == r_np.shape
        assert np.abs(o - r_np).max() <= ATOL


@pytest.fixture(scope="module")
def ours(tiny_model_dir):
    cache: dict[str, Encoder] = {}

    def get(family: str) -> Encoder:
        if family not in cache:
            cache[family] = Encoder.load(str(tiny_model_dir(family)), device="cpu", dtype="float32")
        return cache[family]

    return get


# ------------------------------------------------------------------------ chat template


@pytest.mark.parametrize("family", QWEN_FAMILIES)
def test_chat_template_renders_models_md_string(family: str, tiny_model_dir) -> None:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(str(tiny_model_dir(family)))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Query: hello"}]}]
    rendered = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == MODELS_MD_RENDERING


@pytest.mark.parametrize("family", ["dse-qwen2", "dse-qwen2.5"])
def test_dse_prompt_strings(family: str, ours) -> None:
    enc = ours(family)
    assert enc.render(Item("query", text="hello")) == MODELS_MD_RENDERING + "<|endoftext|>"
    assert (
        enc.render(Item("document", image=pages()[0]))
        == MODELS_MD_RENDERING.replace("Query: hello", "What is shown in this image?") + "<|endoftext|>"
    )
    assert (
        enc.render(Item("text_document", text="abc"))
        == MODELS_MD_RENDERING.replace("Query: hello", "Document: abc") + "<|endoftext|>"
    )


def test_gme_prompt_strings(ours) -> None:
    enc = ours("gme-qwen2")
    assert enc.render(Item("query", text="hello")) == (
        "<|im_start|>system\nFind an image that matches the given text.<|im_end|>\n<|im_start|>user\nhello"
        "<|im_end|>\n<|im_start|>assistant\n<|endoftext|>"
    )
    assert enc.render(Item("document", image=pages()[0])) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|><|im_end|>\n<|im_start|>assistant\n<|endoftext|>"
    )
    assert enc.render(Item("query", text="hi", image=pages()[0])) == (
        "<|im_start|>system\nFind an image that matches the given text.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>hi<|im_end|>\n<|im_start|>assistant\n<|endoftext|>"
    )


# ------------------------------------------------------------------------------- DSE


def dse_reference(path: str, family: str, message_lists: list[list[dict]], dimension: int) -> torch.Tensor:
    """The DSE model card, step by step."""
    import transformers
    from qwen_vl_utils import process_vision_info
    from transformers import AutoProcessor

    min_pixels = 1 * 28 * 28
    max_pixels = 2560 * 28 * 28
    processor = AutoProcessor.from_pretrained(path, min_pixels=min_pixels, max_pixels=max_pixels)
    model_cls = {
        "dse-qwen2": transformers.Qwen2VLForConditionalGeneration,
        "dse-qwen2.5": transformers.Qwen2_5_VLForConditionalGeneration,
    }[family]
    model = model_cls.from_pretrained(path, attn_implementation="eager", dtype=torch.float32).eval()
    processor.tokenizer.padding_side = "left"
    model.padding_side = "left"

    def get_embedding(last_hidden_state: torch.Tensor, dimension: int) -> torch.Tensor:
        reps = last_hidden_state[:, -1]
        reps = torch.nn.functional.normalize(reps[:, :dimension], p=2, dim=-1)
        return reps

    texts = [
        processor.apply_chat_template(msg, tokenize=False, add_generation_prompt=True) + "<|endoftext|>"
        for msg in message_lists
    ]
    image_inputs, video_inputs = process_vision_info(message_lists)
    inputs = processor(text=texts, images=image_inputs, videos=video_inputs, padding="longest", return_tensors="pt")
    cache_position = torch.arange(0, len(texts))
    inputs = model.prepare_inputs_for_generation(**inputs, cache_position=cache_position, use_cache=False)
    with torch.no_grad():
        output = model(**inputs, return_dict=True, output_hidden_states=True)
    return get_embedding(output.hidden_states[-1], dimension)


def dse_query_messages(queries: list[str]) -> list[list[dict]]:
    return [
        [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": Image.new("RGB", (28, 28)), "resized_height": 1, "resized_width": 1},
                    {"type": "text", "text": f"Query: {q}"},
                ],
            }
        ]
        for q in queries
    ]


def dse_doc_messages(images: list[Image.Image]) -> list[list[dict]]:
    return [
        [
            {
                "role": "user",
                "content": [{"type": "image", "image": d}, {"type": "text", "text": "What is shown in this image?"}],
            }
        ]
        for d in images
    ]


def dse_text_doc_messages(texts: list[str]) -> list[list[dict]]:
    return [
        [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": Image.new("RGB", (28, 28)), "resized_height": 1, "resized_width": 1},
                    {"type": "text", "text": f"Document: {t}"},
                ],
            }
        ]
        for t in texts
    ]


def dse_fused_messages(queries: list[str], images: list[Image.Image]) -> list[list[dict]]:
    return [
        [{"role": "user", "content": [{"type": "image", "image": im}, {"type": "text", "text": f"Query: {q}"}]}]
        for q, im in zip(queries, images, strict=True)
    ]


@pytest.mark.parametrize("family", ["dse-qwen2", "dse-qwen2.5"])
def test_dse_parity(family: str, ours, tiny_model_dir) -> None:
    path = str(tiny_model_dir(family))
    enc = ours(family)
    docs = pages()
    dim = enc.dim
    ref = dse_reference(path, family, dse_doc_messages(docs), dim)
    assert_close_single(enc.encode_documents(docs, batch_size=2), ref)
    ref = dse_reference(path, family, dse_query_messages(QUERIES), dim)
    assert_close_single(enc.encode_queries(QUERIES, batch_size=3), ref)
    ref = dse_reference(path, family, dse_text_doc_messages(TEXT_DOCS), dim)
    assert_close_single(enc.encode_text_documents(TEXT_DOCS, batch_size=2), ref)
    # fused query: the query image + "Query: {q}" in one turn
    fused_ref = dse_reference(path, family, dse_fused_messages(QUERIES, docs[:4]), dim)
    assert_close_single(enc.encode_queries(QUERIES, docs[:4], batch_size=3), fused_ref)


def test_dse_matryoshka_parity(tiny_model_dir) -> None:
    path = str(tiny_model_dir("dse-qwen2"))
    enc = Encoder.load(path, device="cpu", dtype="float32", dim=24)
    docs = pages()
    ref = dse_reference(path, "dse-qwen2", dse_doc_messages(docs), 24)
    assert_close_single(enc.encode_documents(docs, batch_size=3), ref)
    assert_close_single(enc.encode_queries(QUERIES), dse_reference(path, "dse-qwen2", dse_query_messages(QUERIES), 24))


# ------------------------------------------------------------------------------- GME


class GmeReference:
    """``GmeQwen2VL`` of ``gme_inference.py`` (embed + forward + fetch_image), module paths of transformers 5."""

    def __init__(self, path: str, min_image_tokens: int = 256, max_image_tokens: int = 1280, max_length: int = 1800):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.base = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
        self.base.eval()
        self.normalize = True
        min_pixels = min_image_tokens * 28 * 28
        max_pixels = max_image_tokens * 28 * 28
        self.max_length = max_length
        self.processor = AutoProcessor.from_pretrained(path, min_pixels=min_pixels, max_pixels=max_pixels)
        self.processor.tokenizer.padding_side = "right"
        self.default_instruction = "You are a helpful assistant."

    def forward(self, input_ids, attention_mask, pixel_values=None, image_grid_thw=None, **kwargs) -> torch.Tensor:
        inputs_embeds = self.base.get_input_embeddings()(input_ids)
        if pixel_values is not None:
            visual = self.base.model.visual
            pixel_values = pixel_values.type(visual.get_dtype())
            image_embeds = visual(pixel_values, grid_thw=image_grid_thw).pooler_output.to(inputs_embeds.device)
            image_mask = input_ids == self.base.config.image_token_id
            inputs_embeds[image_mask] = image_embeds
        outputs = self.base.model.language_model(
            input_ids=None, position_ids=None, attention_mask=attention_mask, inputs_embeds=inputs_embeds
        )
        pooling_mask = attention_mask
        left_padding = pooling_mask[:, -1].sum() == pooling_mask.shape[0]
        if left_padding:
            embeddings = outputs.last_hidden_state[:, -1]
        else:
            sequence_lengths = pooling_mask.sum(dim=1) - 1
            batch_size = outputs.last_hidden_state.shape[0]
            embeddings = outputs.last_hidden_state[torch.arange(batch_size), sequence_lengths]
        if self.normalize:
            embeddings = torch.nn.functional.normalize(embeddings, p=2, dim=1)
        return embeddings.contiguous()

    def embed(self, texts, images, is_query=True, instruction=None) -> torch.Tensor:
        input_texts, input_images = [], []
        for t, i in zip(texts, images, strict=True):
            if not is_query or instruction is None:
                instruction = self.default_instruction
            input_str = ""
            if i is None:
                input_images = None
            else:
                input_str += "<|vision_start|><|image_pad|><|vision_end|>"
                input_images.append(self.fetch_image(i))
            if t is not None:
                input_str += t
            msg = (
                f"<|im_start|>system\n{instruction}<|im_end|>\n<|im_start|>user\n{input_str}<|im_end|>\n"
                "<|im_start|>assistant\n<|endoftext|>"
            )
            input_texts.append(msg)
        inputs = self.processor(
            text=input_texts,
            images=input_images,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        with torch.no_grad():
            return self.forward(**inputs)

    @staticmethod
    def fetch_image(image: Image.Image) -> Image.Image:
        image = image.convert("RGB")
        width, height = image.size
        factor, min_pixels, max_pixels = 28, 4 * 28 * 28, 16384 * 28 * 28
        h_bar = max(factor, round(height / factor) * factor)
        w_bar = max(factor, round(width / factor) * factor)
        if h_bar * w_bar > max_pixels:
            beta = math.sqrt((height * width) / max_pixels)
            h_bar = math.floor(height / beta / factor) * factor
            w_bar = math.floor(width / beta / factor) * factor
        elif h_bar * w_bar < min_pixels:
            beta = math.sqrt(min_pixels / (height * width))
            h_bar = math.ceil(height * beta / factor) * factor
            w_bar = math.ceil(width * beta / factor) * factor
        return image.resize((w_bar, h_bar))


def test_gme_parity(ours, tiny_model_dir) -> None:
    ref = GmeReference(str(tiny_model_dir("gme-qwen2")))
    enc = ours("gme-qwen2")
    instruction = enc.query_instruction
    docs = pages()[:3]  # GME's 256-token minimum makes every page >= 1024 patches: keep the test short
    # candidates: page images, text documents (default instruction)
    assert_close_single(enc.encode_documents(docs, batch_size=2), ref.embed([None] * len(docs), docs, is_query=False))
    assert_close_single(
        enc.encode_text_documents(TEXT_DOCS, batch_size=2),
        ref.embed(TEXT_DOCS, [None] * len(TEXT_DOCS), is_query=False),
    )
    # queries with the instruction: text, image, fused (image before text in one turn)
    assert_close_single(
        enc.encode_queries(QUERIES, batch_size=3), ref.embed(QUERIES, [None] * len(QUERIES), instruction=instruction)
    )
    assert_close_single(
        enc.encode_queries(images=docs[:2], batch_size=1), ref.embed([None] * 2, docs[:2], instruction=instruction)
    )
    assert_close_single(
        enc.encode_queries(QUERIES[:3], docs, batch_size=2), ref.embed(QUERIES[:3], docs, instruction=instruction)
    )


# -------------------------------------------------------------------------- ColQwen


def colpali_reference(family: str, path: str):
    from colpali_engine.models import ColQwen2, ColQwen2_5, ColQwen2_5_Processor, ColQwen2Processor

    model_cls, processor_cls = {
        "colqwen2": (ColQwen2, ColQwen2Processor),
        "colqwen2.5": (ColQwen2_5, ColQwen2_5_Processor),
    }[family]
    model = model_cls.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    processor = processor_cls.from_pretrained(path)

    def run(batch) -> list[torch.Tensor]:
        with torch.no_grad():
            out = model(**batch)
        return [out[i][batch["attention_mask"][i].bool()] for i in range(out.shape[0])]

    return model, processor, run


@pytest.mark.parametrize("family", ["colqwen2", "colqwen2.5"])
def test_colqwen_parity(family: str, ours, tiny_model_dir) -> None:
    _, processor, run = colpali_reference(family, str(tiny_model_dir(family)))
    enc = ours(family)
    docs = pages()
    assert_close_multi(enc.encode_documents(docs, batch_size=2), run(processor.process_images(docs)))
    assert_close_multi(enc.encode_queries(QUERIES, batch_size=3), run(processor.process_queries(QUERIES)))
    # image queries go through process_images
    assert_close_multi(enc.encode_queries(images=docs[:3], batch_size=2), run(processor.process_images(docs[:3])))
    assert_close_multi(enc.encode_text_documents(TEXT_DOCS, batch_size=2), run(processor.process_texts(TEXT_DOCS)))


@pytest.mark.parametrize("family", ["colqwen2", "colqwen2.5"])
def test_colqwen_fused_query_format(family: str, ours, tiny_model_dir) -> None:
    """Fused queries: one sequence = the documented prompt with the image, through the processor."""
    _, processor, run = colpali_reference(family, str(tiny_model_dir(family)))
    enc = ours(family)
    images = pages()[:3]
    queries = QUERIES[:3]
    prompts = [
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
        + q
        + "<|im_end|><|endoftext|>"
        + "<|endoftext|>" * 10
        for q in queries
    ]
    assert [enc.fused_prompt(q) for q in queries] == prompts
    batch = processor(text=prompts, images=images, padding="longest", return_tensors="pt")
    offsets = (batch["image_grid_thw"][:, 1] * batch["image_grid_thw"][:, 2]).tolist()
    batch["pixel_values"] = torch.nn.utils.rnn.pad_sequence(
        list(torch.split(batch["pixel_values"], offsets)), batch_first=True
    )
    fused = enc.encode_queries(queries, images, batch_size=2)
    assert_close_multi(fused, run(batch))
    # one joint sequence: more vectors than the image alone or the text alone
    image_only = enc.encode_queries(images=images)
    text_only = enc.encode_queries(queries)
    for f, i, t in zip(fused, image_only, text_only, strict=True):
        assert f.shape[0] > max(i.shape[0], t.shape[0])
