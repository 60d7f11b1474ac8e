"""The command line end to end, as a user runs it (real subprocesses, real files)."""

import json
import subprocess

import numpy as np
import optuna
import pandas as pd
import pytest

from tests.conftest import AUTOML, EXAMPLE


def run(*args, env=None, timeout=300):
    return subprocess.run([AUTOML, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    res = run("fit", EXAMPLE, "--target", "species", "--time-budget", 20, "--output", out)
    assert res.returncode == 0, res.stderr
    return out, res


def test_fit_writes_the_output_folder(fitted):
    out, res = fitted
    for name in ("manifest.json", "leaderboard.csv", "study.db", "summary.json"):
        assert (out / name).is_file(), name
    assert list(out.glob("model-*.skops"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["task"] == "multiclass" and manifest["metric"] == "log_loss"
    assert manifest["packages"]["scikit-learn"] and manifest["members"][0]["sha256"]
    board = pd.read_csv(out / "leaderboard.csv")
    assert {"learner", "params", "score", "fit_time_s", "state"} <= set(board.columns)
    assert "Leaderboard" in res.stderr
    study = optuna.load_study(study_name="automl", storage=f"sqlite:///{out}/study.db")
    assert len(study.trials) >= len(board)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["elapsed_s"] <= 20 * 1.1 + 1


def test_predict_matches_columns_by_name(fitted, tmp_path):
    out, _ = fitted
    df = pd.read_csv(EXAMPLE)
    shuffled = df[df.columns[::-1]].assign(extra_col=1)
    src = tmp_path / "new.csv"
    shuffled.to_csv(src, index=False)
    res = run("predict", out, src, "--output", tmp_path / "p.csv")
    assert res.returncode == 0, res.stderr
    assert "ignoring 1 column" in res.stderr
    preds = pd.read_csv(tmp_path / "p.csv")
    assert list(preds.columns) == ["prediction", "proba_Adelie", "proba_Chinstrap", "proba_Gentoo"]
    np.testing.assert_allclose(preds.filter(like="proba_").sum(axis=1), 1.0, rtol=1e-6)
    assert (preds["prediction"] == df["species"]).mean() > 0.9
    # an existing output file is not overwritten without --force
    res = run("predict", out, src, "--output", tmp_path / "p.csv")
    assert res.returncode == 2 and "already exists" in res.stderr


def test_predict_missing_column_is_a_clear_error(fitted, tmp_path):
    out, _ = fitted
    pd.read_csv(EXAMPLE).drop(columns=["bill_length_mm"]).to_csv(tmp_path / "m.csv", index=False)
    res = run("predict", out, tmp_path / "m.csv")
    assert res.returncode == 2
    assert "bill_length_mm" in res.stderr and "Traceback" not in res.stderr


def test_output_folder_not_overwritten_without_force(fitted):
    out, _ = fitted
    res = run("fit", EXAMPLE, "--target", "species", "--n-trials", 1, "--output", out)
    assert res.returncode == 2 and "--force" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("args,pattern", [
    (["fit", "nope.csv", "--target", "y"], "file not found"),
    (["fit", str(EXAMPLE), "--target", "Species"], "did you mean 'species'"),
    (["fit", str(EXAMPLE), "--target", "species", "--metric", "rmse"], "does not apply"),
    (["fit", str(EXAMPLE), "--target", "species", "--time-budget", "-3"], "positive"),
    (["fit", str(EXAMPLE), "--target", "species", "--include", "xgb"], "unknown learner"),
    (["predict", "no-such-folder", str(EXAMPLE)], "not found"),
])
def test_bad_input_one_line_exit_2(args, pattern, tmp_path):
    res = run(*args, "--output", tmp_path / "o") if args[0] == "fit" else run(*args)
    assert res.returncode == 2, res.stderr
    assert pattern in res.stderr and "Traceback" not in res.stderr
    assert len([ln for ln in res.stderr.splitlines() if "error" in ln]) == 1


def test_help_explains_options():
    res = run("fit", "--help")
    for flag in ("--time-budget", "--n-trials", "--sampler", "--pruner", "--storage", "--study-name",
                 "--n-jobs", "--include", "--exclude", "--seed", "--task", "--metric", "--resume"):
        assert flag in res.stdout


def test_other_libraries_log_one_line_without_traceback():
    """A library that logs an error with its traceback (SQLAlchemy does when Ctrl-C lands inside a
    query) prints one line under the CLI's logging; --debug keeps the traceback."""
    import sys

    code = (
        "import argparse, logging\n"
        "from automl.cli import _setup_logging\n"
        "import sys\n"
        "_setup_logging(argparse.Namespace(debug=sys.argv[1] == 'debug', quiet=False))\n"
        "try:\n"
        "    raise KeyboardInterrupt\n"
        "except KeyboardInterrupt:\n"
        "    logging.getLogger('sqlalchemy.pool.impl.QueuePool').error('Error closing cursor', exc_info=True)\n"
        "    logging.getLogger('somelib').error('somelib failed\\nsecond line', exc_info=True)\n"
    )
    plain = subprocess.run([sys.executable, "-c", code, "plain"], capture_output=True, text=True)
    assert plain.returncode == 0, plain.stderr
    assert plain.stderr.splitlines() == ["automl: somelib: somelib failed"]
    debug = subprocess.run([sys.executable, "-c", code, "debug"], capture_output=True, text=True)
    assert "Traceback" in debug.stderr and "Error closing cursor" in debug.stderr


def test_fit_leaves_the_openmp_wait_policy_to_the_user(tmp_path):
    """The CLI set OMP_WAIT_POLICY=PASSIVE for its trials: OpenMP threads then sleep at
    every barrier, and LightGBM's trials ran about 4x slower (benchmarks/omp_wait.py)."""
    from tests.runs import plugin_env, run_cli, tiny_csv

    data = tiny_csv(tmp_path / "d.csv")
    probe = tmp_path / "env.txt"
    env = plugin_env(AUTOML_TEST_ENV_NAME="OMP_WAIT_POLICY", AUTOML_TEST_ENV_OUT=str(probe))
    env.pop("OMP_WAIT_POLICY", None)
    res = run_cli("fit", data, "--target", "y", "--output", tmp_path / "out", "--include",
                  "envprobe", "--n-trials", "1", env=env)
    assert res.returncode == 0, res.stderr
    assert probe.read_text() == "<unset>"
    env["OMP_WAIT_POLICY"] = "ACTIVE"  # a user's own setting reaches the trial
    res = run_cli("fit", data, "--target", "y", "--output", tmp_path / "out", "--force",
                  "--include", "envprobe", "--n-trials", "1", env=env)
    assert res.returncode == 0, res.stderr
    assert probe.read_text() == "ACTIVE"


def test_python_dash_m_automl_is_the_same_command():
    """`python -m automl` (an environment without the `automl` script on its PATH)."""
    import sys

    res = subprocess.run([sys.executable, "-m", "automl", "--version"], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0 and res.stdout.startswith("automl "), res.stderr
    res = subprocess.run([sys.executable, "-m", "automl", "fit"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "required: data" in res.stderr
