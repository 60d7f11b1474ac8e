"""Checks of the benchmark runner's helpers: `.venv/bin/python -m pytest benchmarks/test_peerbench.py`."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peerbench import data, report, scoring  # noqa: E402
from peerbench.proc import run_limited  # noqa: E402


def test_normalize_higher_and_lower_is_better() -> None:
    auc = scoring.normalize({"a": 0.9, "b": 0.7, "c": 0.5}, 0.5, higher_is_better=True)
    assert auc == pytest.approx({"a": 1.0, "b": 0.5, "c": 0.0})
    loss = scoring.normalize({"a": 0.2, "b": 0.6, "c": 1.4}, 1.0, higher_is_better=False)
    assert loss == pytest.approx({"a": 1.0, "b": 0.5, "c": -0.5})
    assert scoring.normalize({"a": 1.2}, 1.0, higher_is_better=False) == {"a": 0.0}


def test_ranks_average_ties() -> None:
    assert scoring.ranks({"a": 2.0, "b": 1.0, "c": 1.0}, higher_is_better=False) == {"a": 3.0, "b": 1.5, "c": 1.5}


def test_failures_score_as_constant() -> None:
    group = [
        {"system": "x", "status": "ok", "score": 0.3},
        {"system": "y", "status": "failed", "score": None},
    ]
    report.finalize_group(group, baseline=1.0, higher_is_better=False)
    assert group[0]["normalized"] == 1.0 and group[1]["normalized"] == 0.0
    assert group[1]["rank"] == 2.0


def test_proba_columns_match_labels_by_value(tmp_path: Path) -> None:
    preds = tmp_path / "preds.csv"
    pd.DataFrame({"prediction": [1, -1], "proba_-1.0": [0.2, 0.9], "proba_1": [0.8, 0.1]}).to_csv(preds, index=False)
    truth = np.array(["1", "-1"])
    assert scoring.score_predictions(preds, truth, "binary", ["-1", "1"]) == 1.0


def test_missing_class_column_counts_as_zero_probability(tmp_path: Path) -> None:
    preds = tmp_path / "preds.csv"
    pd.DataFrame({"prediction": ["a", "b"], "proba_a": [0.9, 0.1], "proba_b": [0.1, 0.9]}).to_csv(preds, index=False)
    loss = scoring.score_predictions(preds, np.array(["a", "c"]), "multiclass", ["a", "b", "c"])
    assert loss > 10  # the unseen class got ~0 probability


def test_bad_predictions_raise(tmp_path: Path) -> None:
    preds = tmp_path / "preds.csv"
    pd.DataFrame({"prediction": [1.0]}).to_csv(preds, index=False)
    with pytest.raises(scoring.PredictionError):
        scoring.score_predictions(preds, np.array([1.0, 2.0]), "regression", [])
    with pytest.raises(scoring.PredictionError):
        scoring.score_predictions(tmp_path / "absent.csv", np.array([1.0]), "regression", [])


def test_split_drops_missing_target_and_keeps_singletons_in_train(tmp_path: Path) -> None:
    rows = [{"x": i, "y": "a" if i % 2 else "b"} for i in range(40)]
    rows += [{"x": 100, "y": "lonely"}, {"x": 101, "y": ""}]
    source = tmp_path / "toy.csv"
    pd.DataFrame(rows).to_csv(source, index=False)
    spec = data.DatasetSpec("toy", "multiclass", "y", source)
    split = data.prepare_split(spec, tmp_path / "cache", seed=0)
    train = pd.read_csv(split.train, dtype=str)
    test = pd.read_csv(split.test, dtype=str)
    assert (split.n_train, split.n_test) == (33, 8)
    assert "lonely" in set(train["y"]) and test["y"].value_counts().to_dict() == {"a": 4, "b": 4}
    assert split.classes == ("a", "b", "lonely")
    assert "y" not in pd.read_csv(split.test_features).columns
    again = data.prepare_split(spec, tmp_path / "cache", seed=0)
    assert again == split


def test_run_limited_kills_at_the_limit(tmp_path: Path) -> None:
    result = run_limited([sys.executable, "-c", "import time; time.sleep(30)"], cwd=tmp_path,
                         log_prefix=tmp_path / "sleep", timeout_s=1.0, cores=1)
    assert result.timed_out and result.returncode is None and result.wall_s < 10


def test_run_limited_reports_exit_code_and_memory(tmp_path: Path) -> None:
    code = "import sys; b = bytearray(200 * 2**20); import time; time.sleep(1); sys.exit('boom')"
    result = run_limited([sys.executable, "-c", code], cwd=tmp_path, log_prefix=tmp_path / "crash",
                         timeout_s=30, cores=1)
    assert result.returncode == 1 and "boom" in result.stderr_tail
    assert result.peak_rss_mb > 150


def test_run_limited_counts_the_cpu_of_workers_the_tree_never_reaps(tmp_path: Path) -> None:
    """Ray's workers are reaped by init, not by the process the runner waits for: their CPU
    is the run's own, not other load (AutoGluon best_quality's flights run read as 79%
    other CPU before)."""
    busy = "import time; t = time.process_time(); exec('while time.process_time() - t < 1.5: pass')"
    code = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', %r]); "
            "time.sleep(2.5); import os; os._exit(0)" % busy)  # exits without reaping it
    result = run_limited([sys.executable, "-c", code], cwd=tmp_path, log_prefix=tmp_path / "orphan",
                         timeout_s=30, cores=1)
    assert result.returncode == 0 and result.cpu_s >= 1.2, result


def test_resume_reuses_only_runs_of_the_same_version_and_settings(tmp_path: Path) -> None:
    import json

    import run_peers

    args = run_peers.parse_args(["--out", str(tmp_path), "--resume"])
    key = run_peers.reuse_key("flaml", "2.7.0", args)
    done = {"dataset": "iris", "system": "flaml", "budget": 60, "status": "ok", "score": 0.1,
            "reuse_key": key}
    (tmp_path / "results.json").write_text(json.dumps({"runs": [done]}))
    args.earlier = run_peers.earlier_runs(tmp_path)
    assert run_peers.reusable("flaml", "iris", 60, key, args)["score"] == 0.1
    assert run_peers.reusable("flaml", "iris", 300, key, args) is None  # other budget
    newer = run_peers.reuse_key("flaml", "2.8.0", args)
    assert run_peers.reusable("flaml", "iris", 60, newer, args) is None  # other version
    capped = run_peers.reuse_key("flaml", "2.7.0", run_peers.parse_args(["--max-rows", "100"]))
    assert run_peers.reusable("flaml", "iris", 60, capped, args) is None  # other rows


def test_compare_with_imports_only_the_systems_not_run(tmp_path: Path) -> None:
    import argparse
    import json

    import run_peers

    earlier = tmp_path / "b60-old"
    earlier.mkdir()
    runs = [{"dataset": "d", "system": s, "budget": 60, "status": "ok", "score": v}
            for s, v in (("automl", 0.8), ("flaml", 0.7), ("autogluon", 0.9))]
    (earlier / "results.json").write_text(json.dumps({"runs": runs}))
    args = argparse.Namespace(compare_with=[earlier], systems=["automl", "automl-ray"])
    imported, shown = run_peers.compared_runs(args)
    assert shown == ["flaml", "autogluon"]  # automl was run here: its old run is not shown
    assert set(imported) == {("d", "flaml", 60), ("d", "autogluon", 60)}
    assert imported[("d", "flaml", 60)]["compared_from"] == "b60-old"
    args.compare_with = [tmp_path / "missing"]
    with pytest.raises(SystemExit, match="no results.json"):
        run_peers.compared_runs(args)


def test_several_dataset_folders_make_one_table_and_a_name_in_two_is_refused(tmp_path: Path) -> None:
    for folder, names in (("shared", ["a", "b"]), ("corpus", ["c"]), ("again", ["b"])):
        (tmp_path / folder).mkdir()
        rows = ["name\ttask\ttarget\tfile"] + [f"{n}\tbinary\ty\t{n}.csv" for n in names]
        (tmp_path / folder / "MANIFEST.tsv").write_text("\n".join(rows) + "\n")
    specs = data.read_manifests([tmp_path / "shared", tmp_path / "corpus"])
    assert list(specs) == ["a", "b", "c"] and specs["c"].file == tmp_path / "corpus" / "c.csv"
    with pytest.raises(SystemExit, match="'b' is in both"):
        data.read_manifests([tmp_path / "shared", tmp_path / "again"])


def test_autogluon_best_is_the_autogluon_adapter_with_best_quality(tmp_path: Path, monkeypatch) -> None:
    """Issue 12 compares with AutoGluon's medium and best_quality presets: the variant uses
    AutoGluon's venv and adapter, and only it passes --presets."""
    sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
    import _common

    from peerbench import envs, systems

    spec = systems.RunSpec(train=tmp_path / "train.csv", test_features=tmp_path / "test.csv",
                           target="y", task="binary", budget=300, seed=0, run_dir=tmp_path)
    (best,) = systems.steps("autogluon-best", spec)
    (medium,) = systems.steps("autogluon", spec)
    assert best.cmd[:2] == medium.cmd[:2] == [str(envs.venv_python("autogluon")),
                                              str(systems.PEERS_DIR / "autogluon_runner.py")]
    assert "--presets" not in medium.cmd
    monkeypatch.setattr(sys, "argv", best.cmd[1:])
    args = _common.parse_args("", extra=lambda p: p.add_argument("--presets"))
    assert args.presets == "best_quality" and args.budget == 300
    assert "autogluon-best" in systems.KNOWN_SYSTEMS and "autogluon-best" not in systems.ALL_SYSTEMS


def test_automl_catboost_runs_the_cli_with_catboost_added_to_the_defaults(tmp_path: Path) -> None:
    from peerbench import systems

    spec = systems.RunSpec(train=tmp_path / "train.csv", test_features=tmp_path / "test.csv",
                           target="y", task="binary", budget=60, seed=0, run_dir=tmp_path)
    fit, _ = systems.steps("automl-catboost", spec)
    plain, _ = systems.steps("automl", spec)
    assert fit.cmd[:-2] == plain.cmd and fit.cmd[-2:] == ["--include", "default,catboost"]


def test_scaling_runs_flaml_on_relative_paths(tmp_path: Path, monkeypatch) -> None:
    """scaling.py's FLAML run starts in benchmarks/peers: relative paths (a relative --out)
    were not found there and every FLAML cell failed."""
    from peerbench.envs import venv_python

    if not venv_python("flaml").is_file():
        pytest.skip("the FLAML venv is not installed (run_peers.py --systems flaml installs it)")
    import scaling

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    frame["y"] = (frame["a"] + 0.3 * rng.normal(size=300) > 0).astype(int)
    Path("work").mkdir()
    frame.to_csv("work/train.csv", index=False)
    res = scaling.run_flaml(Path("work/train.csv"), "y", "binary", 3, Path("work"), 2)
    assert res["returncode"] == 0 and res["peak_mb"] > 0
