"""Sentence embeddings of text columns, computed once and shared by every trial and run.

:func:`warm_cache` embeds every distinct text of the run's text columns before the search
starts (in a dedicated forked child, so torch's thread pools never run in the process that
forks the trials) and writes the vectors to the disk store of :mod:`automl.text_cache`,
keyed by backbone weights and text hash. Trial, preprocessing and refit children and Ray
workers read them from there (a run on texts embedded before computes nothing);
:func:`embed` keeps what a process has read in memory. :class:`TextEmbedding` is the
scikit-learn transformer that looks texts up and embeds the rest (at predict time, in a
fresh process).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from automl import text_backbones, text_cache
from automl.exceptions import ConfigError

log = logging.getLogger("automl")
BACKBONE_CHOICES = ("auto", "none", "minilm", "mpnet")  # or a local folder
BACKBONE_ENV = "AUTOML_TEXT_BACKBONE"  # what `auto` means on this machine (default: auto)
WARM_BUDGET_FRACTION = 0.35  # embedding may take at most this share of the time budget
# `auto` embeds text whose median length is at least this many words. 5-fold AUC of fixed
# learners, TF-IDF -> TF-IDF + MiniLM (benchmarks/results/text/): sms_spam (median 12
# words) logistic 0.992 -> 0.996, LightGBM 0.986 -> 0.992; titanic's Name (median 4)
# logistic 0.875 -> 0.830, LightGBM 0.846 -> 0.847.
MIN_MEDIAN_WORDS = 8
BATCH = 64

_CACHE: dict[tuple[str, bytes], np.ndarray] = {}


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _docs(X: Any) -> list[str]:
    s = X.iloc[:, 0] if isinstance(X, pd.DataFrame) else pd.Series(np.asarray(X, dtype=object).ravel())
    return s.fillna("").astype(str).tolist()


def _ensure(texts: Sequence[str], backbone: text_backbones.Backbone, threads: int = 1) -> bool:
    """Bring every text's vector into this process's memory: from the disk store, else
    computed with the encoder (and stored). True when all of them are on disk."""
    key = backbone.key
    missing = {d for d in map(_digest, texts) if (key, d) not in _CACHE}
    if missing:
        for d, vec in text_cache.load(key, missing).items():
            _CACHE[(key, d)] = vec
    todo = list(dict.fromkeys(t for t in texts if (key, _digest(t)) not in _CACHE))
    if not todo:
        return True
    from automl.isolation import torch_threads

    encoder = text_backbones.load_encoder(backbone)
    with torch_threads(threads, extra="text"):
        vectors = encoder.encode(todo, batch_size=BATCH, convert_to_numpy=True,
                                 show_progress_bar=False)
    new = {_digest(t): vec for t, vec in zip(todo, np.asarray(vectors, dtype=np.float32))}
    for d, vec in new.items():
        _CACHE[(key, d)] = vec
    return text_cache.store(key, new)


def embed(texts: Sequence[str], backbone: text_backbones.Backbone, threads: int = 1) -> np.ndarray:
    """Embeddings (float32, one row per text): from memory, the disk store, or computed.

    Torch runs with ``threads`` intra-op threads, one by default: a process whose OpenMP
    pool has run several threads hangs the torch children it forks later, and the search
    process forks its trials (only the dedicated child of :func:`compute` uses more).
    """
    _ensure(texts, backbone, threads)
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([_CACHE[(backbone.key, _digest(t))] for t in texts])


class TextEmbedding(TransformerMixin, BaseEstimator):
    """One text column as the sentence embedding of a pretrained backbone.

    Holds the backbone's name, weights package and checksum, not its weights (90 MB for
    MiniLM, 420 MB for mpnet): a saved model stays small, and using it checks that the
    installed weights are the same.

    Example:
        >>> TextEmbedding("minilm").fit_transform(pd.Series(["a cat", "a dog"])).shape  # doctest: +SKIP
        (2, 384)
    """

    def __init__(self, backbone: str = "minilm") -> None:
        self.backbone = backbone

    def fit(self, X: Any, y: Any = None) -> TextEmbedding:
        resolved = text_backbones.resolve(self.backbone)
        self.backbone_sha256_ = resolved.sha256
        self.backbone_package_ = resolved.package
        self.n_out_ = int(embed(_docs(X)[:1] or [""], resolved).shape[1])
        return self

    def transform(self, X: Any) -> np.ndarray:
        resolved = text_backbones.check_same(self.backbone, self.backbone_sha256_,
                                             getattr(self, "backbone_package_", ""))
        return embed(_docs(X), resolved)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray([f"emb{i}" for i in range(self.n_out_)], dtype=object)


def check_backbone_option(value: str) -> None:
    """Refuse a ``text_backbone`` that is neither a known name nor a folder."""
    if value not in BACKBONE_CHOICES and not os.path.isdir(value):
        raise ConfigError(f"--text-backbone got {value!r}; choose one of: "
                          f"{', '.join(BACKBONE_CHOICES)}, or give a sentence-transformers folder.")


def choose_backbones(option: str, n_texts: int, time_budget: float | None,
                     median_words: float = float(MIN_MEDIAN_WORDS)) -> tuple[str, ...]:
    """The backbones to embed text columns with for this run (empty: TF-IDF only).

    ``auto`` takes MiniLM when the ``text`` extra is installed, the texts are sentences
    rather than names or codes (``median_words``), and embedding them fits in a share of
    the budget; a backbone named explicitly is required (an error names the extra when it
    is missing).
    """
    check_backbone_option(option)
    if option == "none":
        return ()
    if option == "auto":
        if median_words < MIN_MEDIAN_WORDS:
            log.info("text columns get TF-IDF only: their texts are short (median %g words; "
                     "embeddings helped from %d; --text-backbone minilm to force them)",
                     median_words, MIN_MEDIAN_WORDS)
            return ()
        if not text_backbones.text_extra_installed():
            log.info("text columns get TF-IDF only: install `automl[text]` for sentence embeddings")
            return ()
        option = "minilm"
        estimate = text_backbones.SECONDS_PER_100["minilm"] * n_texts / 100 + 15.0
        if time_budget and estimate > WARM_BUDGET_FRACTION * time_budget:
            log.info("text columns get TF-IDF only: embedding %d texts would take about %.0fs of the "
                     "%.0fs budget (give a larger --time-budget for sentence embeddings)",
                     n_texts, estimate, time_budget)
            return ()
    backbone = text_backbones.resolve(option)  # raises naming the extra when missing
    return (backbone.name,)


def distinct_texts(X: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    out: dict[str, None] = {}
    for col in columns:
        out.update(dict.fromkeys(_docs(X[[col]])))
    return list(out)


def compute(texts: list[str], names: Sequence[str],
            threads: int | None = None) -> dict[str, tuple[str, np.ndarray | None]]:
    """Embed ``texts`` with each backbone into the disk store: name -> (backbone key, the
    matrix when the store could not hold it, else None)."""
    from threadpoolctl import threadpool_limits

    out: dict[str, tuple[str, np.ndarray | None]] = {}
    with threadpool_limits(limits=None):
        for name in names:
            backbone = text_backbones.resolve(name)
            stored = _ensure(texts, backbone, threads=threads or os.cpu_count() or 1)
            out[name] = (backbone.key, None if stored else embed(texts, backbone))
    return out


def fill_cache(texts: list[str], computed: dict[str, tuple[str, np.ndarray | None]]) -> None:
    """Keep in this process's memory the embeddings the disk store could not hold
    (children forked later inherit them)."""
    digests = [_digest(t) for t in texts]
    for key, matrix in computed.values():
        if matrix is not None:
            for d, vec in zip(digests, matrix):
                _CACHE[(key, d)] = vec


def on_disk(texts: list[str], name: str) -> bool:
    """Whether the store already holds every text's embedding by backbone ``name``."""
    key = text_backbones.resolve(name).key
    digests = {_digest(t) for t in texts} - {d for k, d in _CACHE if k == key}
    return not digests or len(text_cache.load(key, digests)) == len(digests)


def warm_cache(X: pd.DataFrame, columns: Sequence[str], names: Sequence[str], *,
               isolate: bool, deadline: float, mem_cap_mb: float | None) -> tuple[str, ...]:
    """Embed every distinct text of ``columns`` once, before the search forks.

    Returns the backbones now cached: none when embedding failed or ran out of time (the
    run then goes on with TF-IDF, and says so).
    """
    from automl.isolation import run_isolated

    texts = distinct_texts(X, columns)
    if not names or not texts:
        return ()
    t0 = time.monotonic()
    todo = [n for n in names if not on_disk(texts, n)]
    if not todo:
        log.info("the embeddings of %d distinct texts by %s are cached in %s", len(texts),
                 ", ".join(names), text_cache.root())
        return tuple(names)
    # where a sentence encoder already ran in this process (a notebook, the API, tests), a
    # forked child can deadlock on its locks and thread pools: embed here, one thread
    ran_here = "sentence_transformers" in sys.modules
    if isolate and not ran_here:
        outcome = run_isolated(lambda: compute(texts, todo), deadline=deadline,
                               mem_cap_mb=mem_cap_mb)
        if outcome.status != "ok":
            log.warning("text columns get TF-IDF only: embedding them failed (%s)", outcome.reason)
            return ()
        computed = outcome.value
    else:
        computed = compute(texts, todo, threads=1 if ran_here else None)
    fill_cache(texts, computed)
    log.info("embedded %d distinct texts with %s in %.1fs", len(texts), ", ".join(todo),
             time.monotonic() - t0)
    return tuple(names)


def prepare_text(problem: Any, config: Any, start: float) -> None:
    """Before the search: choose the run's backbone, embed the text columns once, and record
    the backbone in ``problem.info`` (so the text representation is searched)."""
    import dataclasses

    from automl.isolation import default_memory_cap_mb

    columns = problem.info.schema.columns_of("text")
    if not columns:
        return
    texts = distinct_texts(problem.X, columns)
    option = getattr(config, "text_backbone", "auto")
    if option == "auto":  # a machine-wide default, e.g. `none` on a CI without the weights
        option = os.environ.get(BACKBONE_ENV) or "auto"
    words = float(np.median([len(t.split()) for t in texts])) if texts else 0.0
    names = choose_backbones(option, len(texts), config.time_budget, words)
    if not names:
        return
    deadline = start + 0.5 * config.time_budget if config.time_budget else time.monotonic() + 3600.0
    done = warm_cache(problem.X, columns, names, isolate=config.isolate, deadline=deadline,
                      mem_cap_mb=config.memory_limit_mb or default_memory_cap_mb(1))
    if done:
        problem.info = dataclasses.replace(problem.info, text_backbone=done[0])
