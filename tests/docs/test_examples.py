"""Every ```python example of README.md and docs/**/*.md runs, as its own test case.

Each example runs with ``exec`` in a fresh namespace, in a fresh temporary working
directory (the *workspace*), so it must be complete: imports, inputs and all. A failing
example fails its test with the page and line in the traceback (``docs/search.md:42``).

What an example can use, offline:

* **Published model ids.** ``Encoder.load("MrLight/dse-qwen2-2b-mrl-v1")`` and friends resolve
  through the real hub-id code path (``huggingface_hub.snapshot_download``) against a temporary
  Hugging Face cache that holds, under the published ids of :data:`HUB_MODELS`, tiny
  random-weight models built offline by :mod:`dse.testing.tiny` (``HF_HUB_OFFLINE=1``). The
  embeddings are real forward passes of those tiny models, so rankings are meaningless: the
  examples check that the documented code runs as written, not retrieval quality.
* **Files in the workspace** (always there): ``examples/docs/`` (the bundled sample documents),
  ``reports/`` (``q1.pdf``: 2 small pages with a ``q1.pdf.meta.json`` sidecar ``{"team":
  "finance"}``; ``q2.pdf``: 1 page, sidecar ``{"team": "sales"}``) and ``chart.png``. ``HOME``
  and ``$DSE_CACHE`` point into the workspace, so ``~/.cache/...`` paths stay inside it.
* **Prepared inputs on request**, named by a directive (below), built once per test module and
  copied into the workspace: ``my-collection`` (``reports/`` indexed with
  ``MrLight/dse-qwen2-2b-mrl-v1``), ``my-benchmark`` (a local evaluation set: 4 image pages,
  a 3-page PDF, text and image queries, ``qrels/test.tsv``) and ``my-archive`` (a local
  training set with ``qrels/train.tsv`` and ``qrels/test.tsv``).

Directives are HTML comments (invisible on the rendered page) on the lines right before the
opening fence:

* ``<!-- example: skip: REASON -->``: the example cannot run here (it needs a GPU, the network
  or data that is not bundled); the reason is required and shown by pytest;
* ``<!-- example: continue -->``: the example continues the previous example of the same page,
  in the same namespace and workspace (the chain is one test case);
* ``<!-- example: needs my-collection my-benchmark -->``: copy those prepared inputs into the
  workspace.
"""

from __future__ import annotations

import gc
import hashlib
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

#: published model id -> the tiny offline family that stands in for it in the hub cache
HUB_MODELS: dict[str, str] = {
    "MrLight/dse-qwen2-2b-mrl-v1": "dse-qwen2",
    "Alibaba-NLP/gme-Qwen2-VL-2B-Instruct": "gme-qwen2",
    "vidore/colqwen2-v1.0": "colqwen2",
    "Qwen/Qwen2-VL-2B-Instruct": "qwen2-vl-instruct",
}
#: prepared inputs a ``needs`` directive may name
PREPARED = ("my-collection", "my-benchmark", "my-archive")

_FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*example:\s*(.*?)\s*-->\s*$")


@dataclass
class Example:
    """One test case: a python block of a page, or a chain of blocks joined by ``continue``."""

    page: str  #: path relative to the repository root
    line: int  #: 1-based line of the first block's opening fence
    blocks: list[tuple[int, str]] = field(default_factory=list)  #: (line of the first code line, code)
    skip: str | None = None
    needs: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def parse_page(path: Path) -> list[Example]:
    """The python examples of one Markdown page, with their directives applied."""
    rel = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name
    lines = path.read_text(encoding="utf-8").splitlines()
    examples: list[Example] = []
    directives: list[tuple[int, str]] = []
    i = 0
    while i < len(lines):
        d = _DIRECTIVE.match(lines[i])
        if d:
            directives.append((i + 1, d.group(1)))
            i += 1
            continue
        fence = _FENCE.match(lines[i])
        if not fence:
            if lines[i].strip():
                directives = []  # a directive applies to the next fence only
            i += 1
            continue
        indent, lang = fence.group(1), fence.group(2)
        start = i
        i += 1
        body = []
        while i < len(lines) and not re.match(rf"^{indent}```\s*$", lines[i]):
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        if i >= len(lines):
            raise ValueError(f"{rel}:{start + 1}: unclosed code fence")
        i += 1
        if lang != "python":
            if directives:
                raise ValueError(f"{rel}:{directives[0][0]}: example directive before a {lang or 'plain'} block")
            continue
        ex = Example(rel, start + 1, [(start + 2, "\n".join(body))])
        cont = False
        for where, text in directives:
            keyword, _, rest = text.partition(" ")
            if text.startswith("skip:"):
                reason = text[len("skip:") :].strip()
                if not reason:
                    raise ValueError(f"{rel}:{where}: 'example: skip:' needs a reason")
                ex.skip = reason
            elif text == "continue":
                cont = True
            elif keyword == "needs" and rest.split():
                unknown = sorted(set(rest.split()) - set(PREPARED))
                if unknown:
                    raise ValueError(f"{rel}:{where}: unknown prepared input {unknown}; known: {PREPARED}")
                ex.needs = rest.split()
            else:
                raise ValueError(f"{rel}:{where}: unknown example directive {text!r}")
        directives = []
        if cont:
            if not examples:
                raise ValueError(f"{rel}:{start + 1}: 'continue' with no earlier python example on the page")
            prev = examples[-1]
            if ex.skip and not prev.skip:
                raise ValueError(f"{rel}:{start + 1}: a skipped example cannot continue a running one")
            if prev.skip and not ex.skip:
                raise ValueError(f"{rel}:{start + 1}: continues a skipped example; mark it skip too")
            if ex.needs:
                raise ValueError(f"{rel}:{start + 1}: put 'needs' on the first example of the chain")
            prev.blocks += ex.blocks
        else:
            examples.append(ex)
    return examples


def all_examples() -> list[Example]:
    return [ex for page in PAGES for ex in parse_page(page)]


EXAMPLES = all_examples()


# ------------------------------------------------------------------- environment
def _chart(path: Path) -> None:
    """A small bar chart image (a query image)."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (320, 240), "white")
    d = ImageDraw.Draw(im)
    for i, h in enumerate((80, 140, 110, 190)):
        d.rectangle((30 + 70 * i, 220 - h, 80 + 70 * i, 220), fill=(40 + 50 * i, 90, 200 - 40 * i))
    d.line((20, 220, 300, 220), fill="black", width=2)
    d.text((30, 10), "Revenue by region", fill="black")
    im.save(path)


class DocsEnv:
    """What the examples of this module share, built once (lazily) under one temporary directory."""

    def __init__(self, root: Path, tiny_model_dir: Callable[[str], Path]) -> None:
        self.root = root
        self.tiny_model_dir = tiny_model_dir
        self.hub_cache = root / "hub"
        self.hub_cache.mkdir()
        self._prepared: dict[str, Path] = {}
        # always-present inputs
        from support.docs import make_pdf

        self.reports = root / "reports"
        self.reports.mkdir()
        small = (298.0, 420.0)  # A6: small page images keep the tiny models fast
        make_pdf(self.reports / "q1.pdf", 2, seed=11, page_size=small)
        make_pdf(self.reports / "q2.pdf", 1, seed=12, page_size=small, title="Second quarter")
        (self.reports / "q1.pdf.meta.json").write_text(json.dumps({"team": "finance"}), encoding="utf-8")
        (self.reports / "q2.pdf.meta.json").write_text(json.dumps({"team": "sales"}), encoding="utf-8")
        self.chart = root / "chart.png"
        _chart(self.chart)

    # -- the hub cache
    def ensure_hub_models(self, code: str) -> None:
        for repo_id, family in HUB_MODELS.items():
            if repo_id in code:
                self._hub_model(repo_id, family)

    def _hub_model(self, repo_id: str, family: str) -> None:
        """Place the tiny ``family`` model in the hub cache as snapshot ``main`` of ``repo_id``."""
        repo = self.hub_cache / ("models--" + repo_id.replace("/", "--"))
        if repo.exists():
            return
        sha = hashlib.sha1(repo_id.encode()).hexdigest()
        shutil.copytree(self.tiny_model_dir(family), repo / "snapshots" / sha)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(sha, encoding="utf-8")

    # -- prepared inputs
    def prepared(self, name: str) -> Path:
        if name not in self._prepared:
            out = self.root / "prepared" / name
            out.parent.mkdir(exist_ok=True)
            getattr(self, "_make_" + name.replace("-", "_"))(out)
            self._prepared[name] = out
        return self._prepared[name]

    def _make_my_collection(self, out: Path) -> None:
        from dse import Collection

        self._hub_model("MrLight/dse-qwen2-2b-mrl-v1", "dse-qwen2")
        with Collection.create(out, "MrLight/dse-qwen2-2b-mrl-v1", device="cpu") as col:
            report = col.add(self.reports, progress=False)
            assert report.pages == 3 and not report.failures, report.summary()
        (out / ".lock").unlink(missing_ok=True)

    def _make_my_benchmark(self, out: Path) -> None:
        from support.eval_data import make_local_benchmark

        make_local_benchmark(out, n_image_pages=4, n_pdf_pages=3, image_size=(224, 224))

    def _make_my_archive(self, out: Path) -> None:
        from support.training import make_colour_dataset

        make_colour_dataset(out)


@pytest.fixture(scope="module")
def docs_env(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Callable[[str], Path]) -> DocsEnv:
    return DocsEnv(tmp_path_factory.mktemp("docs-examples"), tiny_model_dir)


@pytest.fixture
def workspace(docs_env: DocsEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory with the always-present inputs, offline hub cache and private HOME."""
    import huggingface_hub.constants as hf_constants

    ws = tmp_path / "ws"
    (ws / "examples").mkdir(parents=True)
    (ws / "examples" / "docs").symlink_to(ROOT / "examples" / "docs", target_is_directory=True)
    (ws / "reports").symlink_to(docs_env.reports, target_is_directory=True)
    shutil.copy(docs_env.chart, ws / "chart.png")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("DSE_CACHE", str(home / ".cache" / "dse"))
    monkeypatch.setenv("HF_HUB_CACHE", str(docs_env.hub_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(docs_env.hub_cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(ws)
    return ws


# ------------------------------------------------------------------------- tests
@pytest.mark.parametrize(
    "example",
    [pytest.param(ex, id=ex.id, marks=[pytest.mark.skip(reason=ex.skip)] if ex.skip else []) for ex in EXAMPLES],
)
def test_example_runs(example: Example, docs_env: DocsEnv, workspace: Path) -> None:
    for name in example.needs:
        shutil.copytree(docs_env.prepared(name), workspace / name, symlinks=True)
    docs_env.ensure_hub_models("\n".join(code for _, code in example.blocks))
    namespace: dict[str, Any] = {"__name__": "__docs_example__"}
    try:
        for line, code in example.blocks:
            # pad with newlines so tracebacks give the page's own line numbers
            exec(compile("\n" * (line - 1) + code, str(ROOT / example.page), "exec"), namespace)
    finally:
        namespace.clear()
        gc.collect()


def test_examples_are_found() -> None:
    """The collector sees the pages' examples, and not-runnable ones stay the exception."""
    pages = {ex.page for ex in EXAMPLES}
    assert "README.md" in pages and len(pages) >= 8, sorted(pages)
    skipped = [ex for ex in EXAMPLES if ex.skip]
    assert len(EXAMPLES) >= 25 and len(skipped) * 5 <= len(EXAMPLES), (len(EXAMPLES), len(skipped))


def test_directives_are_checked(tmp_path: Path) -> None:
    page = tmp_path / "probe.md"
    cases = {
        "<!-- example: skip: -->\n```python\nx = 1\n```\n": "needs a reason",
        "<!-- example: continue -->\n```python\nx = 1\n```\n": "no earlier python example",
        "<!-- example: needs my-database -->\n```python\nx = 1\n```\n": "unknown prepared input",
        "<!-- example: sometimes -->\n```python\nx = 1\n```\n": "unknown example directive",
        "<!-- example: skip: GPU -->\n```bash\nls\n```\n": "before a bash block",
        "```python\nx = 1\n": "unclosed code fence",
    }
    for text, message in cases.items():
        page.write_text(text, encoding="utf-8")
        with pytest.raises(ValueError, match=message):
            parse_page(page)
    page.write_text(
        "```python\na = 1\n```\n\ntext\n\n<!-- example: continue -->\n```python\nb = a + 1\n```\n\n"
        "<!-- example: skip: needs a GPU -->\n<!-- example: needs my-collection -->\n"
        "  ```python\n  c = 3\n  ```\n",
        encoding="utf-8",
    )
    first, second = parse_page(page)
    assert [line for line, _ in first.blocks] == [2, 9] and "b = a + 1" in first.blocks[1][1]
    assert second.skip == "needs a GPU" and second.needs == ["my-collection"] and second.blocks[0][1] == "c = 3"
