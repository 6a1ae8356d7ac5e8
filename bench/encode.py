"""Encoding throughput of our encoders vs the plain reference loop, and visual tokens per page.

    .venv/bin/python bench/encode.py            # tiny + small random models, all Qwen families
    .venv/bin/python bench/encode.py --quick    # tiny models only, fewer inputs (smoke run)

For each family the same inputs are encoded by

* **reference**: the published recipe written as a plain loop, one batch at a time
  (DSE: model card - chat template + ``process_vision_info`` + processor + forward with
  ``output_hidden_states=True``; GME: ``gme_inference.py``'s ``embed``; ColQwen:
  colpali-engine ``process_images`` / ``process_queries`` + ``model(**batch)``),
  inputs in the given order;
* **ours**: ``Encoder.encode_documents`` / ``encode_queries`` (input checks, size-sorted
  batches, OOM back-off, float32 numpy output with padding removed).

Both use the same batch size, device, dtype and attention kernel; each measurement is
made batch by batch, ours and the reference back to back on the same batch (alternating
which goes first), ``--repeat`` times. Rates = inputs / total wall time. "overhead" =
the median over batches of ours / reference - 1 (negative = ours is faster), in CPU
time of the process on CPU runs and wall time on GPUs: pairing keeps the ratio honest
when other jobs load the machine. Models are random-weight checkpoints built offline with
``dse.testing.tiny`` (sizes ``tiny`` and ``small``; ``full`` = the real 2B/3B
architecture, only with a CUDA GPU). Visual tokens per page are counted through each
family's real processor at the encoder's default settings.
"""

from __future__ import annotations

import argparse
import functools
import gc
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from dse.encoders import Encoder  # noqa: E402
from dse.testing.tiny import build_tiny  # noqa: E402

FAMILIES = ["dse-qwen2", "dse-qwen2.5", "gme-qwen2", "colqwen2", "colqwen2.5"]
#: Page size for the throughput runs: A4 at 50 DPI (about 300 visual tokens for every family).
THROUGHPUT_PAGE = (413, 585)
#: Page sizes for the visual-token table: A4 at 144 DPI, a 980x980 screenshot (Wiki-SS window).
TOKEN_PAGES = {"A4 @144 DPI (1191x1684)": (1191, 1684), "screenshot 980x980": (980, 980)}

WORDS = [
    "revenue",
    "quarter",
    "growth",
    "battery",
    "pricing",
    "energy",
    "market",
    "table",
    "figure",
    "report",
    "total",
    "annual",
    "summary",
    "customers",
    "segment",
    "margin",
    "forecast",
    "region",
    "product",
    "index",
    "chart",
    "share",
]


def make_page(size: tuple[int, int], seed: int) -> Image.Image:
    """A white page with a title, text lines, a table grid and a bar chart (deterministic)."""
    rng = np.random.default_rng(seed)
    w, h = size
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    d.rectangle([w * 0.06, h * 0.04, w * 0.94, h * 0.09], fill=(30, 60, 120))
    d.text((w * 0.08, h * 0.05), f"Report {seed}: " + " ".join(rng.choice(WORDS, 3)), fill="white")
    y = h * 0.12
    while y < h * 0.5:
        d.text((w * 0.08, y), " ".join(rng.choice(WORDS, 9)), fill=(20, 20, 20))
        y += 13
    for r in range(6):
        for c in range(4):
            x0, y0 = w * (0.08 + 0.2 * c), h * (0.52 + 0.04 * r)
            d.rectangle([x0, y0, x0 + w * 0.2, y0 + h * 0.04], outline=(90, 90, 90))
            d.text((x0 + 3, y0 + 2), f"{rng.uniform(0, 999):.1f}", fill=(0, 0, 0))
    for k in range(8):
        bh = rng.uniform(0.05, 0.18) * h
        d.rectangle(
            [w * (0.1 + 0.1 * k), h * 0.95 - bh, w * (0.16 + 0.1 * k), h * 0.95],
            fill=tuple(int(v) for v in rng.integers(40, 220, 3)),
        )
    return img


def make_queries(n: int) -> list[str]:
    rng = np.random.default_rng(1)
    return [
        ("what is the " if i % 2 else "") + " ".join(rng.choice(WORDS, 2 + i % 9)) + ("?" if i % 3 else "")
        for i in range(n)
    ]


# ------------------------------------------------------------------ reference loops


def reference_runner(family: str, enc: Encoder) -> tuple[Callable, Callable]:
    """(docs_fn, queries_fn) running the published recipe plainly, one batch at a time.

    Model weights and processor files are the same as the encoder's (loaded again the
    reference way); runtime (device, dtype, attention) is the encoder's.
    """
    path = str(enc.source.path)
    rt = enc.runtime
    if family.startswith("dse"):
        import transformers
        from qwen_vl_utils import process_vision_info
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(path, min_pixels=1 * 28 * 28, max_pixels=2560 * 28 * 28)
        cls = (
            transformers.Qwen2VLForConditionalGeneration
            if family == "dse-qwen2"
            else transformers.Qwen2_5_VLForConditionalGeneration
        )
        model = (
            cls.from_pretrained(path, attn_implementation=rt.attn_implementation, dtype=rt.dtype).to(rt.device).eval()
        )
        processor.tokenizer.padding_side = "left"
        model.padding_side = "left"

        def run(messages: list) -> np.ndarray:
            texts = [
                processor.apply_chat_template(m, tokenize=False, add_generation_prompt=True) + "<|endoftext|>"
                for m in messages
            ]
            image_inputs, video_inputs = process_vision_info(messages)
            inputs = processor(
                text=texts, images=image_inputs, videos=video_inputs, padding="longest", return_tensors="pt"
            ).to(rt.device)
            with torch.no_grad():
                out = model(**inputs, return_dict=True, output_hidden_states=True, use_cache=False)
            reps = torch.nn.functional.normalize(out.hidden_states[-1][:, -1][:, : enc.dim], p=2, dim=-1)
            return reps.float().cpu().numpy()

        def docs(batch: list[Image.Image]) -> np.ndarray:
            return run(
                [
                    [
                        {
                            "role": "user",
                            "content": [
                                {"type": "image", "image": im},
                                {"type": "text", "text": "What is shown in this image?"},
                            ],
                        }
                    ]
                    for im in batch
                ]
            )

        def queries(batch: list[str]) -> np.ndarray:
            return run(
                [
                    [
                        {
                            "role": "user",
                            "content": [
                                {
                                    "type": "image",
                                    "image": Image.new("RGB", (28, 28)),
                                    "resized_height": 1,
                                    "resized_width": 1,
                                },
                                {"type": "text", "text": f"Query: {q}"},
                            ],
                        }
                    ]
                    for q in batch
                ]
            )

        return docs, queries

    if family == "gme-qwen2":
        from qwen_vl_utils import fetch_image
        from transformers import AutoModelForImageTextToText, AutoProcessor

        base = (
            AutoModelForImageTextToText.from_pretrained(
                path, dtype=rt.dtype, attn_implementation=rt.attn_implementation
            )
            .to(rt.device)
            .eval()
        )
        processor = AutoProcessor.from_pretrained(path, min_pixels=256 * 28 * 28, max_pixels=1280 * 28 * 28)
        processor.tokenizer.padding_side = "right"

        def embed(texts: list, images: list, instruction: str) -> np.ndarray:
            input_texts, input_images = [], []
            for t, i in zip(texts, images, strict=True):
                s = ""
                if i is None:
                    input_images = None
                else:
                    s += "<|vision_start|><|image_pad|><|vision_end|>"
                    input_images.append(fetch_image({"image": i}))
                s += t or ""
                input_texts.append(
                    f"<|im_start|>system\n{instruction}<|im_end|>\n<|im_start|>user\n{s}<|im_end|>\n"
                    "<|im_start|>assistant\n<|endoftext|>"
                )
            inputs = processor(
                text=input_texts,
                images=input_images,
                padding=True,
                truncation=True,
                max_length=1800,
                return_tensors="pt",
            ).to(rt.device)
            with torch.no_grad():
                emb = base.get_input_embeddings()(inputs["input_ids"])
                if input_images is not None:
                    feats = base.model.visual(
                        inputs["pixel_values"].type(base.model.visual.dtype), grid_thw=inputs["image_grid_thw"]
                    ).pooler_output
                    emb[inputs["input_ids"] == base.config.image_token_id] = feats.to(emb.dtype)
                out = base.model.language_model(inputs_embeds=emb, attention_mask=inputs["attention_mask"])
                last = inputs["attention_mask"].sum(1) - 1
                reps = out.last_hidden_state[torch.arange(len(texts), device=last.device), last]
            return torch.nn.functional.normalize(reps.float(), p=2, dim=1).cpu().numpy()

        return (
            lambda b: embed([None] * len(b), b, "You are a helpful assistant."),
            lambda b: embed(b, [None] * len(b), enc.query_instruction),
        )  # type: ignore[attr-defined]

    # colpali-engine families
    from colpali_engine.models import ColQwen2, ColQwen2_5, ColQwen2_5_Processor, ColQwen2Processor

    model_cls, proc_cls = {"colqwen2": (ColQwen2, ColQwen2Processor), "colqwen2.5": (ColQwen2_5, ColQwen2_5_Processor)}[
        family
    ]
    model = (
        model_cls.from_pretrained(path, dtype=rt.dtype, attn_implementation=rt.attn_implementation).to(rt.device).eval()
    )
    processor = proc_cls.from_pretrained(path)
    processor.image_processor.size = {"shortest_edge": enc.min_pixels, "longest_edge": enc.max_pixels}

    def run(batch) -> list[np.ndarray]:
        batch = batch.to(rt.device)
        with torch.no_grad():
            out = model(**batch)
        return [out[i][batch["attention_mask"][i].bool()].float().cpu().numpy() for i in range(out.shape[0])]

    return (lambda b: run(processor.process_images(b)), lambda b: run(processor.process_queries(b)))


# ------------------------------------------------------------------ timing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for one call."""
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


def paired(
    enc_fn: Callable[[list], object],
    ref_fn: Callable[[list], object],
    items: list,
    batch_size: int,
    repeat: int,
    device: torch.device,
) -> dict[str, float]:
    """Time ours and the reference on the same batches, back to back, alternating which goes first.

    Returns total wall seconds of each side and the median over batches of the
    ours/reference ratio (CPU time of this process on CPU runs, wall time on GPUs):
    pairing makes the ratio robust to other load on the machine, which varies over
    seconds, not within one pair.
    """
    k = 1 if device.type == "cpu" else 0
    wall_ours = wall_ref = 0.0
    ratios: list[float] = []
    for r in range(repeat):
        for j, i in enumerate(range(0, len(items), batch_size)):
            batch = items[i : i + batch_size]
            run_ours, run_ref = partial(enc_fn, batch), partial(ref_fn, batch)
            if (r + j) % 2:
                t_ref = timed(run_ref, device)
                t_ours = timed(run_ours, device)
            else:
                t_ours = timed(run_ours, device)
                t_ref = timed(run_ref, device)
            wall_ours += t_ours[0]
            wall_ref += t_ref[0]
            ratios.append(t_ours[k] / max(t_ref[k], 1e-9))
    return {"ours": wall_ours, "ref": wall_ref, "ratio": float(np.median(ratios)), "n": len(items) * repeat}


def bench_family(
    family: str,
    model_dir: Path,
    pages: list[Image.Image],
    queries: list[str],
    *,
    device: str,
    batch_size: int,
    repeat: int,
) -> dict:
    enc = Encoder.load(str(model_dir), device=device)
    ref_docs, ref_queries = reference_runner(family, enc)
    dev = enc.device
    # warm-up (kernels, allocator, lazy imports)
    enc.encode_documents(pages[:batch_size], batch_size=batch_size)
    ref_docs(pages[:batch_size])
    enc.encode_queries(queries[:batch_size], batch_size=batch_size)
    ref_queries(queries[:batch_size])
    encode_docs = functools.partial(enc.encode_documents, batch_size=batch_size)
    encode_queries = functools.partial(enc.encode_queries, batch_size=batch_size)
    d = paired(encode_docs, ref_docs, pages, batch_size, repeat, dev)
    q = paired(encode_queries, ref_queries, queries, batch_size, repeat, dev)
    tokens = {label: enc.visual_tokens(make_page(size, 0)) for label, size in TOKEN_PAGES.items()}
    res = {
        "family": family,
        "device": str(dev),
        "dtype": enc.runtime.dtype_name,
        "attn": enc.runtime.attn_implementation,
        "page_tokens": enc.visual_tokens(pages[0]),
        "pages_s_ref": d["n"] / d["ref"],
        "pages_s_ours": d["n"] / d["ours"],
        "q_s_ref": q["n"] / q["ref"],
        "q_s_ours": q["n"] / q["ours"],
        "docs_overhead": (d["ratio"] - 1) * 100,
        "q_overhead": (q["ratio"] - 1) * 100,
        "tokens": tokens,
        "default_pixels": (enc.min_pixels, enc.max_pixels),
    }
    del enc, encode_docs, encode_queries
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny models only, fewer inputs")
    parser.add_argument("--families", nargs="*", default=FAMILIES)
    parser.add_argument("--sizes", nargs="*", default=None, help="model sizes (tiny small; full needs CUDA)")
    parser.add_argument("--pages", type=int, default=None)
    parser.add_argument("--queries", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    has_cuda = torch.cuda.is_available()
    sizes = args.sizes or (["tiny"] if args.quick else ["tiny", "small"])
    if has_cuda and args.sizes is None and not args.quick:
        sizes.append("full")
    n_pages = args.pages or (8 if args.quick else 16)
    n_queries = args.queries or (16 if args.quick else 64)
    repeat = args.repeat or (3 if args.quick else 5)
    pages = [make_page(THROUGHPUT_PAGE, i) for i in range(n_pages)]
    queries = make_queries(n_queries)
    print(
        f"# bench/encode.py  (torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
        f"CUDA: {torch.cuda.get_device_name(0) if has_cuda else 'none'})\n"
    )
    print(
        f"{n_pages} pages of {THROUGHPUT_PAGE[0]}x{THROUGHPUT_PAGE[1]} px, {n_queries} text queries, "
        f"batch size {args.batch_size}, {repeat} passes. Rates are wall-clock; overhead = median over "
        f"batches of ours / reference - 1 in {'CPU time of this process' if not has_cuda else 'wall time'} "
        "(each batch run by both, back to back).\n"
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="dse-bench-encode-") as tmp:
        for size in sizes:
            if size == "full" and not has_cuda:
                continue
            for family in args.families:
                model_dir = build_tiny(family, Path(tmp) / f"{family}-{size}", size=size)
                r = bench_family(
                    family, model_dir, pages, queries, device=args.device, batch_size=args.batch_size, repeat=repeat
                )
                r["size"] = size
                results.append(r)
                print(f"  done {family} ({size}): {r['pages_s_ours']:.2f} pages/s", file=sys.stderr)
    print(
        f"load average after the runs: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
        "(wall-clock rates are only comparable when it is below the CPU count)\n"
    )
    print(
        "| family | model | device/dtype/attn | tokens/page | pages/s ref | pages/s ours | overhead "
        "| queries/s ref | queries/s ours | overhead |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['family']} | {r['size']} random | {r['device']}/{r['dtype']}/{r['attn']} | {r['page_tokens']} "
            f"| {r['pages_s_ref']:.2f} | {r['pages_s_ours']:.2f} | {r['docs_overhead']:+.1f}% "
            f"| {r['q_s_ref']:.1f} | {r['q_s_ours']:.1f} | {r['q_overhead']:+.1f}% |"
        )
    worst = max(max(r["docs_overhead"], r["q_overhead"]) for r in results)
    print(
        f"\nWorst overhead of ours vs the reference loop: {worst:+.1f}% (budget: +10%; median of paired "
        f"batches, {'CPU time' if not has_cuda else 'wall time'})."
    )
    if not has_cuda:
        print(
            "\nReal-size (2B Qwen2-VL / 3B Qwen2.5-VL architecture, random weights, bf16) runs: "
            "skipped - no CUDA GPU on this machine (run with a GPU: the `full` size is added automatically)."
        )
    print("\nVisual tokens per page at each family's default settings (through the real processors):\n")
    labels = list(TOKEN_PAGES)
    print("| family | min..max pixels (tokens) | " + " | ".join(labels) + " |")
    print("|---|---|" + "---:|" * len(labels))
    seen = set()
    for r in results:
        if r["family"] in seen:
            continue
        seen.add(r["family"])
        lo, hi = r["default_pixels"]
        print(
            f"| {r['family']} | {lo}..{hi} ({lo // 784}..{hi // 784}) | "
            + " | ".join(str(r["tokens"][k]) for k in labels)
            + " |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
