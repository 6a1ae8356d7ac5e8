"""Fine-tuning end to end on tiny offline models: losses, batch plan, LoRA, the loop, eval, resume, merge, mining."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from support.training import KEYS, make_colour_dataset, make_hub_copy, page_image


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def colour_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_colour_dataset(tmp_path_factory.mktemp("colours"))


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    from dse.cli import main

    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _eval_ndcg5(capsys, model: Path, data: Path, *extra: str) -> float:
    out_dir = tempfile.mkdtemp(prefix="eval-", dir=data.parent)  # never the working directory's dse-eval/
    code, out, err = _cli(
        capsys,
        "-q",
        "eval",
        "--model",
        str(model),
        "--data-dir",
        str(data),
        "--no-cache",
        "--json",
        "--out",
        out_dir,
        *extra,
    )
    assert code == 0, err
    doc = json.loads(out.strip().splitlines()[-1])
    return float(doc["metrics"]["ndcg_cut_5"])


# --------------------------------------------------------------------------- losses


def test_info_nce_matches_cross_entropy_and_matryoshka_slices_first() -> None:
    from dse.training.losses import InfoNCELoss, MatryoshkaInfoNCELoss, info_nce

    gen = torch.Generator().manual_seed(0)
    q, d = torch.randn(4, 16, generator=gen), torch.randn(6, 16, generator=gen)  # 4 positives + 2 hard negatives
    qn, dn = torch.nn.functional.normalize(q, dim=-1), torch.nn.functional.normalize(d, dim=-1)
    logits = qn @ dn.T / 0.02
    want = -torch.log_softmax(logits, dim=1)[torch.arange(4), torch.arange(4)].mean()
    assert torch.allclose(info_nce(qn, dn), want, atol=1e-5)
    assert torch.allclose(InfoNCELoss()(q, d), want, atol=1e-5)
    # Matryoshka: slice THEN normalise, average over dims.
    per_dim = [InfoNCELoss(dim=k)(q, d) for k in (16, 8, 4)]
    assert torch.allclose(MatryoshkaInfoNCELoss([16, 8, 4])(q, d), torch.stack(per_dim).mean(), atol=1e-5)
    sliced = info_nce(torch.nn.functional.normalize(q[:, :8], dim=-1), torch.nn.functional.normalize(d[:, :8], dim=-1))
    assert torch.allclose(per_dim[1], sliced, atol=1e-6)
    assert not torch.allclose(per_dim[1], info_nce(qn[:, :8], dn[:, :8]), atol=1e-3)  # normalise-then-slice differs
    # a perfectly separated batch has a near-zero loss
    eye = torch.eye(4, 16)
    assert float(InfoNCELoss()(eye, eye)) < 1e-6
    with pytest.raises(ValueError, match="exceeds"):
        MatryoshkaInfoNCELoss([32])(q, d)


def test_late_interaction_loss_is_colbert_maxsim_infonce() -> None:
    from dse.training.losses import LateInteractionLoss, pad_token_vectors

    gen = torch.Generator().manual_seed(1)
    q = torch.nn.functional.normalize(torch.randn(3, 5, 8, generator=gen), dim=-1)
    q[0, 3:] = 0  # padding rows are zero, as colpali-engine models return them
    docs = [torch.nn.functional.normalize(torch.randn(n, 7, 8, generator=gen), dim=-1) for n in (3, 2)]
    docs[1] = docs[1][:, :4]
    d = pad_token_vectors(docs)  # 3 positives + 2 negatives, zero-padded to 7 tokens
    assert d.shape == (5, 7, 8) and float(d[3:, 4:].abs().sum()) == 0.0
    scores = torch.einsum("qnd,csd->qcns", q, d).amax(dim=3).sum(dim=2)
    lengths = (q[:, :, 0] != 0).sum(dim=1)
    logits = scores / lengths[:, None] / 0.02
    want = torch.nn.functional.cross_entropy(logits, torch.arange(3))
    assert torch.allclose(LateInteractionLoss()(q, d), want, atol=1e-4)


# --------------------------------------------------------------------------- data and batch plan


def test_batch_plan_is_deterministic_and_has_no_false_negatives(colour_data: Path) -> None:
    from dse.training.data import BatchPlan, load_training_data

    data = load_training_data(colour_data)
    assert len(data.examples) == len(KEYS) * 6
    with_negs = [e for e in data.examples if e.negatives]
    assert len(with_negs) == len(KEYS)  # score-0 qrels rows are hard negatives
    plan = BatchPlan(data.examples, batch_size=8, hard_negatives=1, seed=3)
    epoch0 = plan.batches(0)
    assert BatchPlan(data.examples, batch_size=8, hard_negatives=1, seed=3).batches(0) == epoch0
    assert plan.batches(1) != epoch0
    seen = [s.example.query_id for b in epoch0 for s in b]
    assert sorted(seen) == sorted(e.query_id for e in data.examples)  # every example once per epoch
    for batch in epoch0:
        assert len(batch) <= 8
        docs = [s.positive for s in batch] + [n for s in batch for n in s.negatives]
        for s in batch:
            others = [d for d in docs if d != s.positive]
            assert not set(others) & set(s.example.positives)  # no in-batch false negative
    # the stream resumes at any micro-batch index with the same batches
    stream = plan.micro_batches()
    first = [next(stream) for _ in range(len(epoch0) + 3)]
    resumed = plan.micro_batches(start=len(epoch0) - 1)
    assert [next(resumed) for _ in range(4)] == first[-4:]


def test_negatives_file_and_bad_input(colour_data: Path, tmp_path: Path) -> None:
    from dse.training.data import TrainingDataError, load_training_data, read_negatives

    good = tmp_path / "negs.jsonl"
    good.write_text(json.dumps({"query_id": "train-water-1", "negatives": ["p-chart", "p-water"]}) + "\n")
    data = load_training_data(colour_data, negatives=good)
    ex = next(e for e in data.examples if e.query_id == "train-water-1")
    assert ex.negatives == ("p-chart",)  # a positive named as a negative is ignored
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"query_id": "q", "negatives": ["p-chart"]}) + "\n{not json\n")
    with pytest.raises(TrainingDataError, match=r"bad.jsonl:2: malformed JSON"):
        read_negatives(bad)
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text(json.dumps({"query_id": "train-water-1", "negatives": ["p-nowhere"]}) + "\n")
    with pytest.raises(TrainingDataError, match="p-nowhere"):
        load_training_data(colour_data, negatives=unknown)


@pytest.mark.parametrize("fmt", ["parquet", "disk"])
def test_colpali_hub_layout_from_local_copies(fmt: str, tmp_path: Path) -> None:
    from dse.training.data import load_training_data

    copy = make_hub_copy(tmp_path / "hub", n_keys=3, fmt=fmt)
    data = load_training_data(copy)
    assert data.kind == "hub" and len(data.examples) == 3 * 6
    assert len(data.page_ids) == 3  # rows about the same image_filename share one page id
    ex = data.examples[0]
    assert ex.text == "water" and ex.positives == ("pages/water.png",)
    page = data.page(ex.positives[0])
    assert page.mode == "RGB" and page.getpixel((20, 20)) == KEYS[0][1]


def test_hub_unreachable_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, capsys, tiny_model_dir, tmp_path: Path
) -> None:
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    code, _, err = _cli(
        capsys,
        "train",
        "--model",
        str(tiny_model_dir("dse-qwen2")),
        "--data",
        "vidore/colpali_train_set",
        "--out",
        str(tmp_path / "o"),
        "--device",
        "cpu",
    )
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("dse train: error:")]
    assert len(lines) == 1 and "vidore/colpali_train_set" in lines[0] and "--data /path/to/a/local/copy" in lines[0]
    assert "Traceback" not in err


# --------------------------------------------------------------------------- LoRA


@pytest.mark.parametrize("family", ["dse-qwen2", "colqwen2"])
def test_default_lora_targets_language_model_and_head(family: str, tiny_model_dir) -> None:
    from dse.encoders import Encoder
    from dse.training.lora import attach_lora, default_lora_settings

    enc = Encoder.load(str(tiny_model_dir(family)), device="cpu")
    settings = default_lora_settings(enc.family)
    assert (settings.r, settings.alpha, settings.dropout) == ((8, 64, 0.1) if family == "dse-qwen2" else (32, 32, 0.1))
    peft_model = attach_lora(enc.model, settings)
    adapted = {n.rsplit(".lora_A", 1)[0] for n, _ in peft_model.named_parameters() if ".lora_A" in n}
    names = {n.split(".")[-1] for n in adapted}
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= names
    assert not any("visual" in n for n in adapted)
    assert ("custom_text_proj" in names) == (family == "colqwen2")
    assert all(("lora_" in n) == p.requires_grad for n, p in peft_model.named_parameters())


# --------------------------------------------------------------------------- the loop: learning + eval CLI


def test_dse_training_learns_and_beats_untrained_through_dse_eval(
    colour_data: Path, tiny_model_dir, capsys, tmp_path: Path
) -> None:
    from dse.training.trainer import read_log

    base = tiny_model_dir("dse-qwen2")
    before = _eval_ndcg5(capsys, base, colour_data)
    out = tmp_path / "run"
    code, stdout, err = _cli(
        capsys,
        "-q",
        "train",
        "--model",
        str(base),
        "--data",
        str(colour_data),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--max-steps",
        "150",
        "--lr",
        "3e-3",
        "--batch-size",
        "8",
        "--eval-every",
        "75",
        "--save-every",
        "75",
    )
    assert code == 0, err
    assert "trained 150 steps" in stdout and "nDCG@5" in stdout
    log = read_log(out)
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 150 and all(np.isfinite(losses))
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20])  # the training loss falls
    evals = [r for r in log if "eval" in r]
    assert [r["step"] for r in evals] == [75, 150] and "ndcg_cut_5" in evals[-1]["eval"]
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    after = _eval_ndcg5(capsys, base, colour_data, "--adapter", str(out))
    assert after >= before + 0.2 and after >= 0.8, (before, after)
    assert after == pytest.approx(evals[-1]["eval"]["ndcg_cut_5"], abs=1e-6)  # in-training eval == dse eval
    # the adapter directory also loads as a model of its own (base from adapter_config.json)
    assert _eval_ndcg5(capsys, out, colour_data) == pytest.approx(after, abs=1e-6)


# --------------------------------------------------------------------------- resume


def _adapter_tensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path / "adapter_model.safetensors"))


def test_resume_after_interruption_equals_uninterrupted_run(colour_data: Path, tiny_model_dir, tmp_path: Path) -> None:
    from dse.training.checkpoint import CheckpointError, latest_checkpoint, read_state
    from dse.training.trainer import TrainConfig, TrainingError, read_log, train

    common = dict(
        model=str(tiny_model_dir("dse-qwen2")),
        data=str(colour_data),
        device="cpu",
        batch_size=4,
        max_steps=8,
        learning_rate=2e-3,
        warmup_steps=2,
        grad_accum=2,
        progress=False,
        seed=5,
    )
    full = train(TrainConfig(out=str(tmp_path / "full"), **common))
    assert full.steps == 8 and not full.stopped

    part = train(TrainConfig(out=str(tmp_path / "part"), stop_after=3, **common))
    assert part.stopped and part.steps == 3 and part.adapter is None
    ckpt = latest_checkpoint(tmp_path / "part")
    assert ckpt is not None and read_state(ckpt).step == 3 and read_state(ckpt).micro_batches == 6
    assert not (tmp_path / "part" / "adapter_model.safetensors").exists()
    with pytest.raises(TrainingError, match="--resume"):
        train(TrainConfig(out=str(tmp_path / "part"), **common))
    with pytest.raises(CheckpointError, match="learning|seed"):
        train(TrainConfig(out=str(tmp_path / "part"), resume=True, **{**common, "seed": 6}))

    rest = train(TrainConfig(out=str(tmp_path / "part"), resume=True, **common))
    assert rest.resumed_from == 3 and rest.steps == 8 and len(rest.losses) == 5
    np.testing.assert_allclose(rest.losses, full.losses[3:], rtol=1e-5, atol=1e-6)  # same data order, optimizer, RNG
    a, b = _adapter_tensors(tmp_path / "full"), _adapter_tensors(tmp_path / "part")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(b[k], a[k], atol=1e-6)
    steps = [r["step"] for r in read_log(tmp_path / "part") if "loss" in r]
    assert steps == list(range(1, 9))


# --------------------------------------------------------------------------- adapter round trip + merge


def _max_diff(a, b) -> float:
    if isinstance(a, np.ndarray):
        return float(np.abs(a - b).max())
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("family", ["dse-qwen2", "colqwen2"])
def test_adapter_round_trip_and_merge_give_identical_embeddings(
    family: str, colour_data: Path, tiny_model_dir, capsys, tmp_path: Path
) -> None:
    from dse.encoders import Encoder
    from dse.training.trainer import TrainConfig, train

    base = tiny_model_dir(family)
    out = tmp_path / "adapter"
    result = train(
        TrainConfig(
            model=str(base),
            data=str(colour_data),
            out=str(out),
            device="cpu",
            batch_size=8,
            max_steps=12,
            learning_rate=5e-3,
            progress=False,
        )
    )
    assert result.steps == 12 and all(np.isfinite(result.losses))
    assert np.mean(result.losses[-4:]) < np.mean(result.losses[:4])  # the loss falls within a few steps
    pages = [page_image(c) for _, c in KEYS[:4]] + [page_image((128, 128, 128), 112)]
    queries = ["water", "find chart", "the revenue page"]

    def embed(enc):
        return enc.encode_documents(pages), enc.encode_queries(queries)

    trained = embed(result.encoder)
    loaded = embed(Encoder.load(str(base), device="cpu", adapter=str(out)))
    merged_dir = tmp_path / "merged"
    code, _, err = _cli(capsys, "train", "merge", "--adapter", str(out), "--out", str(merged_dir))
    assert code == 0, err
    assert (merged_dir / "config.json").is_file() and not (merged_dir / "adapter_config.json").exists()
    merged_enc = Encoder.load(str(merged_dir), device="cpu")
    assert merged_enc.family == family and merged_enc.settings["adapter"] is None
    merged = embed(merged_enc)
    plain = embed(Encoder.load(str(base), device="cpu"))
    for i in range(2):
        assert _max_diff(loaded[i], trained[i]) <= 1e-5
        assert _max_diff(merged[i], trained[i]) <= 1e-5
        assert _max_diff(plain[i], trained[i]) > 1e-3  # training changed the embeddings
    # merging into a non-empty directory, or a directory that is no adapter, fails in one line
    code, _, err = _cli(capsys, "train", "merge", "--adapter", str(out), "--out", str(merged_dir))
    assert code == 3 and "not empty" in err
    code, _, err = _cli(capsys, "train", "merge", "--adapter", str(base), "--out", str(tmp_path / "x"))
    assert code == 3 and "no adapter_config.json" in err


# --------------------------------------------------------------------------- mining, Matryoshka, bad pages


def test_mine_negatives_then_train_with_them_and_matryoshka(
    colour_data: Path, tiny_model_dir, capsys, tmp_path: Path
) -> None:
    from dse.eval.data import load_local_dataset
    from dse.training.trainer import read_log

    base = tiny_model_dir("dse-qwen2")
    negs = tmp_path / "negs.jsonl"
    code, stdout, err = _cli(
        capsys,
        "mine-negatives",
        "--model",
        str(base),
        "--data",
        str(colour_data),
        "--out",
        str(negs),
        "-k",
        "3",
        "--device",
        "cpu",
    )
    assert code == 0, err
    rows = [json.loads(line) for line in negs.read_text().splitlines()]
    train_ds = load_local_dataset(colour_data, "train")
    assert {r["query_id"] for r in rows} == {q.id for q in train_ds.queries}
    for r in rows:
        assert len(r["negatives"]) == 3 and not set(r["negatives"]) & set(train_ds.qrels[r["query_id"]])
        assert r["scores"] == sorted(r["scores"], reverse=True)
    code, _, err = _cli(
        capsys,
        "-q",
        "train",
        "--model",
        str(base),
        "--data",
        str(colour_data),
        "--out",
        str(tmp_path / "o"),
        "--negatives",
        str(negs),
        "--hard-negatives",
        "2",
        "--max-steps",
        "3",
        "--matryoshka-dims",
        "64,32,16",
        "--device",
        "cpu",
        "--json",
    )
    assert code == 0, err
    losses = [r["loss"] for r in read_log(tmp_path / "o") if "loss" in r]
    assert len(losses) == 3 and all(np.isfinite(losses))
    cfg = json.loads((tmp_path / "o" / "train_config.json").read_text())
    assert cfg["matryoshka_dims"] == [64, 32, 16] and cfg["negatives"] == str(negs)


def test_bad_pages_are_skipped_and_bad_options_are_usage_errors(
    colour_data: Path, tiny_model_dir, capsys, caplog, tmp_path: Path
) -> None:
    import logging
    import shutil

    caplog.set_level(logging.WARNING, logger="dse.training")

    data = tmp_path / "data"
    shutil.copytree(colour_data, data)
    (data / "pages" / "p-water.png").write_bytes(b"not a png at all")
    base = str(tiny_model_dir("dse-qwen2"))
    code, _, err = _cli(
        capsys,
        "train",
        "--model",
        base,
        "--data",
        str(data),
        "--out",
        str(tmp_path / "o"),
        "--max-steps",
        "2",
        "--device",
        "cpu",
    )
    assert code == 0, err
    assert "page p-water is skipped: cannot read image" in caplog.text and "Traceback" not in err
    code, _, err = _cli(capsys, "train", "--model", base, "--out", str(tmp_path / "o2"))
    assert code == 2 and "--data and --out are required" in err
    code, _, err = _cli(
        capsys, "train", "--model", base, "--data", str(data), "--out", str(tmp_path / "o3"), "--batch-size", "0"
    )
    assert code == 2 and err.strip() == "dse train: error: batch size must be at least 1, got 0"
    code, _, err = _cli(
        capsys, "train", "--model", str(tmp_path / "missing-model"), "--data", str(data), "--out", str(tmp_path / "o4")
    )
    assert code == 3 and "does not exist" in err
    nodata = tmp_path / "nodata"
    nodata.mkdir()
    code, _, err = _cli(capsys, "train", "--model", base, "--data", str(nodata), "--out", str(tmp_path / "o5"))
    assert code == 2 and "parquet" in err
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
