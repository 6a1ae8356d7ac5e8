"""The OCR + BM25 baseline (``dse eval --model bm25-ocr``).

The pipeline that screenshot retrieval replaces: tesseract reads the very same page
images the visual models embed (:func:`dse.eval.data.iter_corpus_images`), and BM25
(``bm25s``, Lucene variant, k1=1.5, b=0.75) ranks the OCR text against the query text.
OCR text is cached per page (:mod:`dse.eval.ocr`), so a second run OCRs nothing.

Tokenisation (documents and queries alike): lower-cased words of two or more word
characters (``bm25s``' default splitter), stop words of the OCR language removed, no
stemming. A query image, if any, is OCR'd and its text appended to the query text.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dse.eval.ocr import OcrCache, ocr_pages
from dse.extras import require

if TYPE_CHECKING:  # pragma: no cover
    from dse.eval.data import EvalDataset
    from renderers import RenderSettings

log = logging.getLogger(__name__)

Run = dict[str, dict[str, float]]

#: the name ``dse eval --model`` / ``--hybrid`` use for this baseline
MODEL_NAME = "bm25-ocr"

# tesseract language code -> bm25s stop-word list name
_STOPWORDS = {
    "eng": "en",
    "deu": "de",
    "nld": "nl",
    "fra": "fr",
    "spa": "es",
    "por": "pt",
    "ita": "it",
    "rus": "ru",
    "swe": "sv",
    "nor": "no",
    "chi_sim": "zh",
    "chi_tra": "zh",
    "tur": "tr",
    "kor": "ko",
    "dan": "da",
}


def stopwords_for(lang: str) -> list[str]:
    """Union of the stop-word lists of the ``+``-separated tesseract languages ``lang``
    (languages bm25s has no list for contribute none)."""
    require("eval")
    from bm25s.tokenization import _infer_stopwords  # bm25s' own name -> list table

    words: list[str] = []
    for part in lang.split("+"):
        name = _STOPWORDS.get(part)
        if name is not None:
            words.extend(_infer_stopwords(name))
    return sorted(set(words))


class BM25Index:
    """BM25 over plain texts; ``search`` returns every query's top-k ``(index, score)``."""

    def __init__(self, texts: Sequence[str], *, stopwords: Sequence[str] = ()) -> None:
        require("eval")
        import bm25s
        from bm25s.tokenization import Tokenizer

        # bm25s sets its logger to DEBUG on import, which would print through any root handler
        if logging.getLogger("bm25s").level == logging.DEBUG:
            logging.getLogger("bm25s").setLevel(logging.WARNING)

        self.size = len(texts)
        self._tokenizer = Tokenizer(lower=True, stopwords=list(stopwords))
        tokens = self._tokenizer.tokenize(list(texts), return_as="ids", show_progress=False)
        self._retriever = bm25s.BM25()
        self._retriever.index(tokens, show_progress=False)
        self._vocab = self._tokenizer.get_vocab_dict()

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every text for ``query``: float32 ``(size,)``; all 0 when no query
        word occurs in any text (or the query has only stop words)."""
        words = self._tokenizer.tokenize([query], update_vocab=False, return_as="string", show_progress=False)[0]
        # tokenizer id -> the retriever's own id (bm25s indexes tokenizer ids through a second vocabulary)
        index_vocab = self._retriever.vocab_dict
        ids = [index_vocab[self._vocab[w]] for w in words if w and w in self._vocab and self._vocab[w] in index_vocab]
        if not ids or self.size == 0:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self._retriever.get_scores_from_ids(ids), dtype=np.float32)

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        """Top ``k`` ``(text index, score)`` best first; ties in corpus order (scores of 0
        included, as in a full score matrix)."""
        s = self.scores(query)
        order = np.argsort(-s, kind="stable")[:k]
        return [(int(i), float(s[i])) for i in order]


def ocr_corpus(
    dataset: EvalDataset,
    *,
    cache_dir: str | Path | None = None,
    lang: str = "eng",
    progress: bool = True,
    workers: int | None = None,
    render_settings: RenderSettings | None = None,
) -> dict[str, str]:
    """``{corpus id: OCR text}`` for every page of ``dataset`` that can be produced (pages that
    fail to load or render are reported by :func:`iter_corpus_images` and left out)."""
    from dse.eval.data import iter_corpus_images

    with OcrCache.in_dir(cache_dir) as cache:
        return ocr_pages(
            iter_corpus_images(dataset, render_settings),
            lang=lang,
            cache=cache,
            workers=workers,
            progress=progress,
            total=len(dataset.corpus),
        )


def _query_texts(dataset: EvalDataset, cache_dir: str | Path | None, lang: str, workers: int | None) -> dict[str, str]:
    texts = {q.id: q.text or "" for q in dataset.queries}
    with_images = [(q.id, q.image) for q in dataset.queries if q.image is not None]
    if with_images:
        from renderers import load_image

        def images():
            for qid, path in with_images:
                try:
                    yield qid, load_image(path)
                except Exception as exc:
                    log.warning("query %s: cannot read image %s: %s", qid, path, exc)

        with OcrCache.in_dir(cache_dir) as cache:
            ocr = ocr_pages(images(), lang=lang, cache=cache, workers=workers, progress=False)
        for qid, text in ocr.items():
            texts[qid] = f"{texts[qid]}\n{text}".strip()
    return texts


def bm25_ocr_run(
    dataset: EvalDataset,
    *,
    k: int = 100,
    cache_dir: str | Path | None = None,
    lang: str = "eng",
    progress: bool = True,
    workers: int | None = None,
    render_settings: RenderSettings | None = None,
) -> Run:
    """Rank the corpus of ``dataset`` for each query by BM25 over tesseract OCR text.

    Returns ``{query id: {corpus id: BM25 score}}`` with the top ``k`` pages per query
    (fewer if the corpus is smaller). ``cache_dir`` holds the OCR cache (``ocr.sqlite``;
    None = no cache kept); ``lang`` is tesseract's language (e.g. ``eng``, ``fra``,
    ``eng+fra``) and picks the stop words; ``workers`` parallel tesseract processes.
    Raises :class:`dse.eval.ocr.OcrUnavailable` when tesseract or the language is missing,
    ValueError for ``k < 1``.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    texts = ocr_corpus(
        dataset, cache_dir=cache_dir, lang=lang, progress=progress, workers=workers, render_settings=render_settings
    )
    ids = [c.id for c in dataset.corpus if c.id in texts]
    empty = sum(1 for i in ids if not texts[i].strip())
    if empty:
        log.info("%d of %d pages have no OCR text", empty, len(ids))
    index = BM25Index([texts[i] for i in ids], stopwords=stopwords_for(lang))
    queries = _query_texts(dataset, cache_dir, lang, workers)
    run: Run = {}
    for q in dataset.queries:
        run[q.id] = {ids[i]: score for i, score in index.search(queries[q.id], k)}
    return run
