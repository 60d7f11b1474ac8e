#!/usr/bin/env python
"""Text columns: sentence embeddings vs TF-IDF vs a linear probe on frozen embeddings.

On one stratified 75/25 split of a CSV with a text column (default: sms_spam), scored by
ROC AUC (binary) on the test part, with wall-clock times:

- ``automl embed``: ``automl fit`` as it runs by default with ``automl[text]`` (MiniLM
  embeddings cached once, TF-IDF / embeddings / both searched per trial);
- ``automl tfidf``: the same search with ``text_backbone="none"`` (today's TF-IDF path);
- ``probe``: logistic regression (C=1) on the frozen MiniLM embeddings alone.

A second table compares the representations themselves, outside the search: 5-fold
cross-validated AUC of logistic regression (C=1) and LightGBM (defaults) on TF-IDF,
embeddings and both, built by ``automl.preprocessing.make_preprocessor``.

    .venv/bin/python benchmarks/text_benchmark.py --budget 120 --out benchmarks/results/text.md
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def automl_run(X: pd.DataFrame, y: pd.Series, X_test: pd.DataFrame, y_test: pd.Series,
               backbone: str, budget: float, seed: int) -> tuple[float, float, str]:
    from sklearn.metrics import roc_auc_score

    from automl import engine
    from automl.config import SearchConfig
    from automl.data import prepare_target

    frame = X.assign(__target__=y.to_numpy())
    X_raw, target = prepare_target(frame, "__target__", "auto")
    config = SearchConfig(time_budget=budget, seed=seed, text_backbone=backbone).validate()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        result = engine.fit(X_raw, target, config, target_name="label",
                            storage_url=f"sqlite:///{tmp}/study.db", start=t0)
    elapsed = time.monotonic() - t0
    proba = result.model.predict_scores(X_test)
    positive = list(result.model.classes).index(sorted(set(y))[1])
    auc = roc_auc_score(y_test == sorted(set(y))[1], proba[:, positive])
    best = result.summary["best"]
    text = best["params"].get("text_features", "tfidf")
    return auc, elapsed, f"{best['learner']} ({text})"


def probe(X: pd.DataFrame, y: pd.Series, X_test: pd.DataFrame, y_test: pd.Series,
          column: str) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from automl import text_backbones, text_embeddings

    t0 = time.monotonic()
    backbone = text_backbones.resolve("minilm")
    E = text_embeddings.embed(X[column].fillna("").astype(str).tolist(), backbone)
    E_test = text_embeddings.embed(X_test[column].fillna("").astype(str).tolist(), backbone)
    clf = LogisticRegression(C=1.0, max_iter=2000).fit(E, y)
    auc = roc_auc_score(y_test == clf.classes_[1], clf.predict_proba(E_test)[:, 1])
    return auc, time.monotonic() - t0


def representations(X: pd.DataFrame, y: pd.Series, seed: int) -> list[tuple[str, str, float]]:
    """5-fold AUC of fixed learners on each text representation (embeddings cached)."""
    import lightgbm as lgb
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    from automl.preprocessing import make_preprocessor
    from automl.schema import clean_frame, infer_schema

    schema = infer_schema(X)
    Xc = clean_frame(X, schema)
    yb = (y == sorted(set(y))[1]).to_numpy().astype(int)
    rows = []
    for text in ("tfidf", "embed", "tfidf+embed"):
        for name, style, make in (
                ("logistic C=1", "linear", lambda: LogisticRegression(C=1.0, max_iter=2000)),
                ("lightgbm default", "tree", lambda: lgb.LGBMClassifier(verbose=-1, n_jobs=1))):
            scores = []
            for tr, va in StratifiedKFold(5, shuffle=True, random_state=seed).split(Xc, yb):
                pre = make_preprocessor(schema, style, seed=seed, n_rows=len(tr), text=text,
                                        backbone="minilm")
                Xt = pre.fit_transform(Xc.iloc[tr], yb[tr])
                model = make().fit(Xt, yb[tr])
                scores.append(roc_auc_score(yb[va], model.predict_proba(pre.transform(Xc.iloc[va]))[:, 1]))
            rows.append((text, name, float(np.mean(scores))))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/datasets/sms_spam.csv"))
    ap.add_argument("--target", default="label")
    ap.add_argument("--budget", type=float, default=120.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rows", type=int, default=0, help="subsample this many rows (0: all)")
    ap.add_argument("--out", default="")
    ap.add_argument("--representations-only", action="store_true",
                    help="only the table of fixed learners on each text representation")
    args = ap.parse_args()
    from sklearn.model_selection import train_test_split

    from automl.schema import infer_schema

    load0 = os.getloadavg()[0]
    # a fresh embedding store (automl.text_cache) for each method: its time includes embedding
    store = Path(tempfile.mkdtemp(prefix="text-benchmark-"))
    os.environ["AUTOML_CACHE_DIR"] = str(store / "automl")
    df = pd.read_csv(args.data)
    if args.rows:
        df = df.sample(args.rows, random_state=args.seed)
    y, X = df[args.target].astype(str), df.drop(columns=[args.target])
    text_cols = infer_schema(X).columns_of("text")
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, stratify=y, random_state=args.seed)
    lines = [f"# Text benchmark: {Path(args.data).name} ({len(df)} rows; text column(s) {text_cols}; "
             f"75/25 split, seed {args.seed})", "", f"`{' '.join(sys.argv)}`", ""]
    runs = (("automl, TF-IDF only (`text_backbone=none`)", "none"),
            ("automl, TF-IDF / MiniLM embeddings / both searched (`text_backbone=minilm`)", "minilm"))
    if not args.representations_only:
        lines += ["| method | test ROC AUC | seconds | best |", "| --- | --- | --- | --- |"]
    # automl first: its parent process must not have run torch before it forks trials.
    for label, backbone in () if args.representations_only else runs:
        auc, secs, best = automl_run(X_tr, y_tr, X_te, y_te, backbone, args.budget, args.seed)
        lines.append(f"| {label}, {args.budget:.0f} s budget | {auc:.4f} | {secs:.0f} | {best} |")
        print(lines[-1], flush=True)
    from automl import text_embeddings

    if not args.representations_only:
        text_embeddings._CACHE.clear()  # the probe's time includes embedding, as automl's does
        os.environ["AUTOML_CACHE_DIR"] = str(store / "probe")
        auc, secs = probe(X_tr, y_tr, X_te, y_te, text_cols[0])
        lines.append(f"| linear probe on frozen MiniLM embeddings | {auc:.4f} | {secs:.0f} | logistic C=1 |")
    lines += ["", "Representations, 5-fold AUC on the training part (fixed learners):", "",
              "| text features | learner | AUC |", "| --- | --- | --- |"]
    for text, learner, auc in representations(X_tr, y_tr, args.seed):
        lines.append(f"| {text} | {learner} | {auc:.4f} |")
    lines += ["", f"Machine: {os.cpu_count()} cores; load average at the start {load0:.1f}, at the end "
              f"{os.getloadavg()[0]:.1f} (shared with other jobs: times are upper bounds)."]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        Path(args.out).write_text(report)


if __name__ == "__main__":
    main()
