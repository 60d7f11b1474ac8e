"""Peer adapter: untuned LightGBM (library defaults). The time budget is ignored."""
from __future__ import annotations

import pandas as pd
from lightgbm import LGBMClassifier, LGBMRegressor, __version__ as lgb_version

from _common import PeerJob, Stopwatch, load_job, parse_args, write_info, write_predictions


def to_categories(train: pd.DataFrame, test: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Text columns become 'category' with the training levels (unseen test levels -> NaN)."""
    train, test = train.copy(), test.copy()
    text_cols = [
        c for c in train.columns
        if not (pd.api.types.is_numeric_dtype(train[c]) or pd.api.types.is_bool_dtype(train[c]))
    ]
    for col in text_cols:
        dtype = pd.CategoricalDtype(sorted(train[col].dropna().unique()))
        train[col] = train[col].astype(dtype)
        test[col] = test[col].astype(dtype)
    return train, test, text_cols


def main() -> None:
    job: PeerJob = load_job(parse_args(__doc__ or ""))
    watch = Stopwatch()
    train, test, cat_cols = to_categories(job.train, job.test)
    params = {"n_jobs": job.n_jobs, "random_state": job.seed, "verbose": -1}
    if job.is_classification:
        model = LGBMClassifier(**params).fit(train, job.y)
        fit_s = watch.lap()
        proba = pd.DataFrame(model.predict_proba(test), columns=[str(c) for c in model.classes_])
        prediction = model.predict(test)
    else:
        model = LGBMRegressor(**params).fit(train, job.y)
        fit_s = watch.lap()
        proba, prediction = None, model.predict(test)
    write_predictions(job, prediction, proba)
    write_info(job, {
        "library": f"lightgbm {lgb_version}", "params": "library defaults",
        "categorical_columns": cat_cols, "fit_s": fit_s, "predict_s": watch.lap(),
    })


if __name__ == "__main__":
    main()
