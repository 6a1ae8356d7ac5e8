"""The OpenAPI document against the running API: ``schemathesis run --checks all`` (every check:
server errors, status codes, content types, response schemas and headers, schema-valid requests
accepted, schema-invalid ones refused, auth enforced where declared, unsupported methods...) against
a real uvicorn server over the tiny-model collections, with 0 failures:

* without an API key, on the dse-qwen2 collection (single-vector: no similarity maps, no answers);
* with an API key and a tiny answer generator, on the colqwen2 collection (every operation).

Bounded: ``--max-examples`` per operation (``DSE_SCHEMATHESIS_EXAMPLES``, default 10), a fixed seed
(``DSE_SCHEMATHESIS_SEED``) so CI runs are reproducible, a per-request timeout, a response-time
bound (30 s) and a timeout on the whole run. The schemathesis CLI runs in a child process, with
:mod:`schemathesis_hooks` teaching it what an image file is.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from support.server import Built, live_server

from dse.server.app import create_app
from dse.server.limits import Limits

HERE = Path(__file__).resolve().parent
KEY = "schemathesis-key-0042"
MAX_EXAMPLES = int(os.environ.get("DSE_SCHEMATHESIS_EXAMPLES", "10"))
SEED = int(os.environ.get("DSE_SCHEMATHESIS_SEED", "20240611"))
RUN_TIMEOUT_S = 600


def schemathesis_command() -> list[str] | None:
    beside = Path(sys.executable).with_name("schemathesis")
    found = str(beside) if beside.exists() else shutil.which("schemathesis")
    return [found] if found else None


pytestmark = [
    pytest.mark.subprocess,
    pytest.mark.skipif(schemathesis_command() is None, reason="the schemathesis CLI is not installed (dev group)"),
]


def run_schemathesis(url: str, workdir: Path, *, key: str | None = None) -> str:
    """Run the CLI against ``url``; returns its output (the test fails with it unless 0 failures)."""
    cmd = [
        *(schemathesis_command() or []),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--request-timeout",
        "60",
        # `--checks all` includes a response-time check (10 s by default); the machines running the
        # suite are small and shared, so the bound is set here, above the slowest cold request
        "--max-response-time",
        "30",
        "--generation-database",
        "none",
        "--no-color",
    ]
    if key:
        cmd += ["--header", f"X-API-Key: {key}"]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
    output = proc.stdout + proc.stderr
    summary = re.search(r"(\d+) generated, (\d+) passed", output)
    print(output[-3000:])  # shown by pytest on failure
    assert proc.returncode == 0, output[-12000:]
    assert "No issues found" in output and summary, output[-3000:]
    return output


def operations_tested(output: str) -> int:
    found = re.search(r"Tested: (\d+)", output)
    return int(found.group(1)) if found else 0


def test_schemathesis_without_a_key(dse_col: Built, tmp_path: Path) -> None:
    app = create_app(dse_col.directory, device="cpu", encoder=dse_col.encoder)
    with live_server(app) as url:
        output = run_schemathesis(url, tmp_path)
    # /health, /info, /search, GET and HEAD /pages/{page_id}/image
    assert operations_tested(output) == 5


def test_schemathesis_with_a_key_every_operation(col_col: Built, tiny_model_dir, tmp_path: Path) -> None:
    app = create_app(
        col_col.directory,
        device="cpu",
        encoder=col_col.encoder,
        api_key=KEY,
        generator=str(tiny_model_dir("qwen2-vl-instruct")),
        # a short answer from small page images: the run asks for many answers
        generator_options={"max_new_tokens": 2, "min_pixels": 4 * 28 * 28, "max_pixels": 16 * 28 * 28},
        limits=Limits(max_answer_k=3),
    )
    with live_server(app) as url:
        headers = {"X-API-Key": KEY}
        # warm up the lazily loaded parts (similarity maps, generation) outside the per-request timeout
        assert httpx.get(f"{url}/pages/1/similarity", params={"text": "red"}, headers=headers, timeout=300).is_success
        assert httpx.post(f"{url}/answer", json={"question": "red?", "k": 1}, headers=headers, timeout=300).is_success
        output = run_schemathesis(url, tmp_path, key=KEY)
    # the above + GET /pages/{page_id}/similarity and POST /answer
    assert operations_tested(output) == 7
