"""Generated training sets where relevance is learnable from the page images.

Each page is filled with one distinct colour and is the only page of its colour; a
query names the page's key word (a word the tiny tokenizer holds as a single token,
e.g. ``water``), in several phrasings. The mapping word -> colour is arbitrary, so an
untrained model ranks pages at random and a model that learned it ranks the right
page first: training must raise held-out nDCG@5. Training queries and held-out (test)
queries use different phrasings of the same key words.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

#: Key words (single tokens of the tiny tokenizer) and their page colours.
KEYS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("water", (220, 30, 30)),
    ("people", (30, 160, 40)),
    ("number", (40, 60, 220)),
    ("chart", (240, 220, 40)),
    ("table", (150, 40, 190)),
    ("figure", (30, 200, 210)),
    ("revenue", (250, 140, 20)),
    ("model", (20, 20, 20)),
)
TRAIN_TEMPLATES = ("{w}", "the {w}", "find {w}", "{w} page", "a {w} image", "where is {w}")
TEST_TEMPLATES = ("what {w}", "see the {w}", "{w} one")


def page_image(colour: tuple[int, int, int], size: int = 56) -> Image.Image:
    """A ``size`` x ``size`` page of one colour with a thin white frame (4 visual tokens at 56 px)."""
    im = Image.new("RGB", (size, size), colour)
    ImageDraw.Draw(im).rectangle([0, 0, size - 1, size - 1], outline=(255, 255, 255))
    return im


def make_colour_dataset(
    out_dir: str | Path, *, n_keys: int = len(KEYS), size: int = 56, hard_negative_rows: bool = True
) -> Path:
    """Write a local-format dataset with ``qrels/train.tsv`` and ``qrels/test.tsv``.

    ``n_keys`` pages (one per key word); ``len(TRAIN_TEMPLATES)`` training and
    ``len(TEST_TEMPLATES)`` held-out queries per page. With ``hard_negative_rows`` every
    first training query of a page also gets a score-0 judgement on the next page (the
    local format's way to give hard negatives).
    """
    out = Path(out_dir)
    (out / "pages").mkdir(parents=True, exist_ok=True)
    (out / "qrels").mkdir(exist_ok=True)
    keys = KEYS[:n_keys]
    corpus, queries, train, test = [], [], [], []
    for i, (word, colour) in enumerate(keys):
        pid = f"p-{word}"
        page_image(colour, size).save(out / "pages" / f"{pid}.png")
        corpus.append({"_id": pid, "image": f"pages/{pid}.png"})
        for j, t in enumerate(TRAIN_TEMPLATES):
            qid = f"train-{word}-{j}"
            queries.append({"_id": qid, "text": t.format(w=word)})
            train.append((qid, pid, 1))
            if hard_negative_rows and j == 0:
                train.append((qid, f"p-{keys[(i + 1) % len(keys)][0]}", 0))
        for j, t in enumerate(TEST_TEMPLATES):
            qid = f"test-{word}-{j}"
            queries.append({"_id": qid, "text": t.format(w=word)})
            test.append((qid, pid, 1))
    (out / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus), encoding="utf-8")
    (out / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries), encoding="utf-8")
    for name, rows in (("train", train), ("test", test)):
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{c}\t{s}" for q, c, s in rows]
        (out / "qrels" / f"{name}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def make_hub_copy(out_dir: str | Path, *, n_keys: int = len(KEYS), size: int = 56, fmt: str = "parquet") -> Path:
    """The same pairs in the ColPali training-set layout (``query``, ``image``, ``image_filename``),
    written as parquet files (``fmt="parquet"``) or with ``save_to_disk`` (``fmt="disk"``)."""
    import datasets

    rows: dict[str, list] = {"query": [], "image": [], "image_filename": [], "answer": []}
    for word, colour in KEYS[:n_keys]:
        for t in TRAIN_TEMPLATES:
            rows["query"].append(t.format(w=word))
            rows["image"].append(page_image(colour, size))
            rows["image_filename"].append(f"pages/{word}.png")
            rows["answer"].append(word)
    ds = datasets.Dataset.from_dict(
        rows,
        features=datasets.Features(
            {
                "query": datasets.Value("string"),
                "image": datasets.Image(),
                "image_filename": datasets.Value("string"),
                "answer": datasets.Value("string"),
            }
        ),
    )
    out = Path(out_dir)
    if fmt == "disk":
        ds.save_to_disk(str(out))
    else:
        (out / "data").mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(out / "data" / "train-00000-of-00001.parquet"))
    return out
