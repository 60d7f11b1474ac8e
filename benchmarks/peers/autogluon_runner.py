"""Peer adapter: AutoGluon TabularPredictor, default presets (or --presets), the benchmark's
time limit and metric."""
from __future__ import annotations

from autogluon.tabular import TabularPredictor, __version__ as ag_version

from _common import PeerJob, Stopwatch, load_job, parse_args, write_info, write_predictions

METRICS = {"binary": "roc_auc", "multiclass": "log_loss", "regression": "root_mean_squared_error"}


def main() -> None:
    args = parse_args(__doc__ or "", extra=lambda p: p.add_argument(
        "--presets", default=None, help="AutoGluon presets, e.g. best_quality (default: medium_quality)"))
    job: PeerJob = load_job(args)
    watch = Stopwatch()
    train = job.train.assign(**{job.target: job.y})
    predictor = TabularPredictor(
        label=job.target, problem_type=job.task, eval_metric=METRICS[job.task],
        path=str(job.workdir / "ag_model"), verbosity=1,
    )
    predictor.fit(train, time_limit=job.budget, num_cpus=job.n_jobs, num_gpus=0,
                  **({"presets": args.presets} if args.presets else {}))
    fit_s = watch.lap()
    prediction = predictor.predict(job.test)
    proba = None
    if job.is_classification:
        proba = predictor.predict_proba(job.test, as_multiclass=True)
        proba.columns = [str(c) for c in proba.columns]
    write_predictions(job, prediction, proba)
    leaderboard = predictor.leaderboard(silent=True)
    write_info(job, {
        "library": f"autogluon.tabular {ag_version}", "presets": args.presets or "default (medium_quality)",
        "metric": METRICS[job.task], "best_model": predictor.model_best,
        "n_models": int(len(leaderboard)), "models": leaderboard["model"].tolist(),
        "fit_s": fit_s, "predict_s": watch.lap(),
    })


if __name__ == "__main__":
    main()
