"""The run folder: --force never deletes a user's files, one writer at a time, a resume on
other data is refused, every numeric flag is checked, and resource failures exit 3."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest

from automl import cli
from automl.config import SearchConfig
from automl.exceptions import ConfigError, OutputExistsError
from automl.persistence import load_model
from automl.rundir import FolderLock, is_run_folder, open_run
from tests.conftest import AUTOML
from tests.runs import (
    exit_status,
    plugin_env,
    run_cli,
    start_cli,
    tiny_csv,
    wait_group_gone,
    wait_until,
)

FIT = ("--n-trials", "2", "--include", "logistic", "--quiet")


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_error_line(err: str, pattern: str) -> None:
    assert "Traceback" not in err, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("automl: error: ")]
    assert len(errors) == 1 and pattern in errors[0], err


def _main(argv, capfd) -> tuple[int, str]:
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    captured = capfd.readouterr()
    return code, captured.err + captured.out


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tiny_csv(tmp_path_factory.mktemp("data") / "d.csv")


def test_force_never_replaces_a_folder_automl_did_not_write(tmp_path, capfd):
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    train = tiny_csv(project / "train.csv")
    (project / "notes.md").write_text("my notes")
    (project / "src" / "main.py").write_text("print('hello')\n")
    before = _tree(project)
    code, err = _main(["fit", train, "--target", "y", "--output", project, "--force", *FIT], capfd)
    assert code == 2
    _one_error_line(err, "--force replaces only a folder automl wrote")
    assert _tree(project) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project"]


def test_force_replaces_an_empty_folder_and_an_automl_run(tmp_path, data, capfd):
    out = tmp_path / "out"
    out.mkdir()
    assert _main(["fit", data, "--target", "y", "--output", out, "--force", *FIT], capfd)[0] == 0
    assert is_run_folder(out) and open_run(out).run["format"] == "automl-run"
    first = (out / "manifest.json").read_bytes()
    assert _main(["fit", data, "--target", "y", "--output", out, "--force", "--seed", "3", *FIT],
                 capfd)[0] == 0
    assert (out / "manifest.json").read_bytes() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing left aside


def test_a_second_writer_is_refused_while_a_run_is_going(tmp_path, data):
    out = tmp_path / "out"
    proc = start_cli("fit", data, "--target", "y", "--output", out, "--time-budget", 60,
                     "--include", "sleepy", log_dir=tmp_path)
    try:
        wait_until(lambda: (out / "study.db").is_file(), 90, "the first run's study", proc)
        for mode in ("--force", "--resume"):
            res = run_cli("fit", data, "--target", "y", "--output", out, mode, *FIT)
            assert res.returncode == 2, res.stderr
            _one_error_line(res.stderr, f"is in use by another automl process (PID {proc.pid})")
        with pytest.raises(OutputExistsError, match="in use"):
            FolderLock(out).acquire()
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        assert exit_status(proc, tmp_path) == 130
        wait_group_gone(proc.pid)
    FolderLock(out).acquire().release()  # the lock went with the run's processes
    res = run_cli("fit", data, "--target", "y", "--output", out, "--resume", "--include", "sleepy",
                  "--n-trials", "3", "--quiet")
    assert res.returncode == 0, res.stderr


def test_resume_on_other_data_is_refused_at_the_start_unless_asked(tmp_path, data, capfd):
    out = tmp_path / "out"
    assert _main(["fit", data, "--target", "y", "--output", out, *FIT], capfd)[0] == 0
    other = tiny_csv(tmp_path / "other.csv", n=150, seed=7)
    code, err = _main(["fit", other, "--target", "y", "--output", out, "--resume", *FIT], capfd)
    assert code == 2
    _one_error_line(err, "is not the data this search started with (150 rows x 4 columns, "
                         "was 200 x 4)")
    same_shape = pd.read_csv(data)
    same_shape.loc[0, "a"] += 1
    same_shape.to_csv(tmp_path / "edited.csv", index=False)
    code, err = _main(["fit", tmp_path / "edited.csv", "--target", "y", "--output", out,
                       "--resume", *FIT], capfd)
    assert code == 2 and "same shape, other values" in err, err
    # asked for: the search goes on on the new rows and ends with a model (no stale OOF rows)
    code, err = _main(["fit", other, "--target", "y", "--output", out, "--resume",
                       "--allow-new-data", "--n-trials", "4", "--include", "logistic"], capfd)
    assert code == 0, err
    assert "differs from the run's first data" in err
    assert load_model(out).predict(pd.read_csv(other).drop(columns="y")).shape == (150,)


BAD_FLAGS = [
    (("--memory-limit", "nan"), "--memory-limit got nan"),
    (("--memory-limit", "-5"), "--memory-limit got -5.0"),
    (("--trial-timeout", "-1"), "--trial-timeout got -1.0"),
    (("--trial-timeout", "inf"), "--trial-timeout got inf"),
    (("--time-budget", "0"), "--time-budget got 0.0"),
    (("--time-budget", "soon"), "argument --time-budget: expected a number, got 'soon'"),
    (("--cv", "0"), "--cv got 0"),
    (("--cv", "1"), "--cv got 1"),
    (("--cv", "-3"), "--cv got -3"),
    (("--cv", "five"), "--cv got 'five'"),
    (("--seed", "-1"), "--seed got -1; give a whole number from 0 to 4294967295"),
    (("--seed", str(2**40)), "--seed got 1099511627776"),
    (("--seed", "1.5"), "argument --seed: expected a whole number, got '1.5'"),
    (("--n-trials", "0"), "--n-trials got 0"),
    (("--n-jobs", "0"), "--n-jobs got 0"),
    (("--gpus-per-trial", "-0.5"), "--gpus-per-trial got -0.5"),
    (("--gpus-per-trial", "nan"), "--gpus-per-trial got nan"),
    (("--sampler", "bayes"), "argument --sampler: invalid choice: 'bayes'"),
    (("--bogus-flag",), "unrecognized arguments: --bogus-flag"),
]


@pytest.mark.parametrize("flags,pattern", BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_every_numeric_flag_is_checked_with_one_line(flags, pattern, tmp_path, data, capfd):
    code, err = _main(["fit", data, "--target", "y", "--output", tmp_path / "out", *flags], capfd)
    assert code == 2
    _one_error_line(err, pattern)
    assert not (tmp_path / "out").exists()


def test_the_api_checks_the_same_options():
    with pytest.raises(ConfigError, match="--memory-limit got nan"):
        SearchConfig(memory_limit_mb=float("nan")).validate()
    with pytest.raises(ConfigError, match="--seed got -1"):
        SearchConfig(seed=-1).validate()


@pytest.fixture(scope="module")
def model(tmp_path_factory, data) -> Path:
    out = tmp_path_factory.mktemp("model") / "m"
    assert cli.main(["fit", str(data), "--target", "y", "--output", str(out), *FIT]) == 0
    return out


def test_predict_into_a_folder_or_a_missing_folder_is_a_clear_error(model, data, tmp_path, capfd):
    code, err = _main(["predict", model, data, "--output", tmp_path], capfd)
    assert code == 2
    _one_error_line(err, f"--output '{tmp_path}' is a folder; give a file path")
    code, err = _main(["predict", model, data, "--output", tmp_path / "no" / "p.csv"], capfd)
    assert code == 2
    _one_error_line(err, "does not exist")


def test_a_full_disk_exits_3_with_one_line(model, data):
    with open("/dev/full", "w") as full:
        res = subprocess.run([AUTOML, "predict", str(model), str(data)], stdout=full,
                             stderr=subprocess.PIPE, text=True, timeout=120)
    assert res.returncode == 3, res.stderr
    _one_error_line(res.stderr, "No space left on device")
    assert "the disk is full" in res.stderr


def test_predict_output_to_a_device_is_written_through_not_replaced(model, data):
    res = subprocess.run([AUTOML, "predict", str(model), str(data), "--output", "/dev/stdout"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("prediction,proba_no,proba_yes")
    assert Path("/dev/stdout").is_symlink() or not Path("/dev/stdout").is_file()


@pytest.fixture
def mount(tmp_path):
    """A small tmpfs of our own (root only; skipped where mounting is not allowed)."""
    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root on Linux")
    point = tmp_path / f"mnt-{uuid.uuid4().hex[:6]}"
    point.mkdir()
    mounted: list[Path] = []

    def make(size: str, readonly: bool = False) -> Path:
        opts = f"size={size}" + (",ro" if readonly else "")
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(point)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
        mounted.append(point)
        return point

    yield make
    for p in mounted:
        subprocess.run(["umount", "-l", str(p)], capture_output=True)


def test_a_read_only_folder_exits_3_and_keeps_nothing_half_written(mount, data, capfd):
    point = mount("1m", readonly=True)
    code, err = _main(["fit", data, "--target", "y", "--output", point / "out", *FIT], capfd)
    assert code == 3
    _one_error_line(err, "Read-only file system")


def test_a_disk_that_fills_up_during_the_run_exits_3(mount, data):
    point = mount("160k")
    res = run_cli("fit", data, "--target", "y", "--output", point / "out", "--n-trials", "6",
                  "--include", "logistic,random_forest")
    assert res.returncode == 3, res.stderr
    _one_error_line(res.stderr, "")
    assert "disk is full" in res.stderr or "No space left" in res.stderr, res.stderr


@pytest.mark.slow
def test_resume_with_another_text_backbone_is_refused_unless_asked(tmp_path, data):
    """Through the real CLI: the backbone of the first run is kept in run.json."""
    out = tmp_path / "out"
    first = run_cli("fit", data, "--target", "y", "--output", out, "--text-backbone", "none", *FIT)
    assert first.returncode == 0, first.stderr
    other = run_cli("fit", data, "--target", "y", "--output", out, "--resume",
                    "--text-backbone", "minilm", *FIT)
    assert other.returncode == 2
    _one_error_line(other.stderr, "this search started with --text-backbone none, not minilm; "
                                  "give --text-backbone none, or pass --allow-new-data")
    # asked for: it goes on (here `auto`, which this environment makes TF-IDF only)
    allowed = run_cli("fit", data, "--target", "y", "--output", out, "--resume", "--allow-new-data",
                      "--text-backbone", "auto", "--n-trials", "3", "--include", "logistic",
                      env=plugin_env(AUTOML_TEXT_BACKBONE="none"))
    assert allowed.returncode == 0, allowed.stderr
    assert "resuming with --text-backbone auto (the run started with none)" in allowed.stderr
    assert open_run(out).run["text_backbone"] == "auto"
