"""Peer adapter: FLAML AutoML with the benchmark's time budget and metric."""
from __future__ import annotations

import pandas as pd
from flaml import AutoML, __version__ as flaml_version

from _common import PeerJob, Stopwatch, load_job, parse_args, write_info, write_predictions

METRICS = {"binary": "roc_auc", "multiclass": "log_loss", "regression": "rmse"}


def main() -> None:
    # FLAML treats only object/category columns as categorical: keep text as object.
    job: PeerJob = load_job(parse_args(__doc__ or ""), legacy_strings=True)
    watch = Stopwatch()
    automl = AutoML()
    automl.fit(
        X_train=job.train, y_train=job.y,
        task="classification" if job.is_classification else "regression",
        metric=METRICS[job.task], time_budget=job.budget, n_jobs=job.n_jobs, seed=job.seed,
        log_file_name=str(job.workdir / "flaml.log"), verbose=0,
    )
    fit_s = watch.lap()
    prediction = automl.predict(job.test)
    proba = None
    if job.is_classification:
        labels = [str(c) for c in automl.classes_]
        proba = pd.DataFrame(automl.predict_proba(job.test), columns=labels)
    write_predictions(job, prediction, proba)
    write_info(job, {
        "library": f"flaml {flaml_version}", "metric": METRICS[job.task],
        "best_estimator": automl.best_estimator, "best_config": automl.best_config,
        "best_loss": automl.best_loss, "fit_s": fit_s, "predict_s": watch.lap(),
    })


if __name__ == "__main__":
    main()
