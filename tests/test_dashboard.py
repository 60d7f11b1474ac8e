"""``automl dashboard``: a real run served by a real optuna-dashboard on loopback and read
in a real headless Chromium; errors on bad folders; the study annotations."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import optuna
import psutil
import pytest

from automl.dashboard import annotate_study
from automl.rundir import RunFolder, load_study, open_run
from automl.exceptions import ModelFileError
from tests.browser import chromium, chromium_path, free_port
from tests.conftest import AUTOML, EXAMPLE

STUDY = "penguin-review"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONWARNINGS": "ignore"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dash") / "out"
    proc = subprocess.run([AUTOML, "fit", str(EXAMPLE), "--target", "species", "--output", str(out),
                           "--include", "logistic,knn", "--n-trials", "5", "--study-name", STUDY,
                           "--quiet"], capture_output=True, text=True, timeout=240, env=_env(),
                          check=False)
    assert proc.returncode == 0, proc.stderr
    return out


def _copy_run(run_dir: Path, dest: Path) -> Path:
    shutil.copytree(run_dir, dest)
    return dest


def _wait_for_url(proc: subprocess.Popen, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line:
            m = re.search(r"(http://\S+)", line)
            if m:
                return m.group(1)
        elif proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"dashboard exited early ({proc.returncode}): {err}")
    raise AssertionError("the dashboard printed no URL")


def test_dashboard_serves_the_run_in_a_browser(run_dir: Path, tmp_path: Path) -> None:
    chromium_path()  # skip before starting anything when there is no browser
    run = _copy_run(run_dir, tmp_path / "run")
    port = free_port()
    proc = subprocess.Popen([AUTOML, "dashboard", str(run), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        url = _wait_for_url(proc)
        assert url.startswith(f"http://127.0.0.1:{port}/dashboard/studies/")
        # bound to loopback only
        listening = [c for c in psutil.Process(proc.pid).net_connections(kind="tcp")
                     if c.status == psutil.CONN_LISTEN]
        assert listening and all(c.laddr.ip == "127.0.0.1" for c in listening)
        trials = load_study(open_run(run)).get_trials(deepcopy=False)
        finished = [t for t in trials if t.state.is_finished()]
        with chromium() as ctx:
            page = ctx.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.get_by_text(f"{STUDY} (id=", exact=False).first.wait_for(timeout=60_000)
            page.get_by_text("Best Trial", exact=False).first.wait_for(timeout=60_000)
            # the objective is named after the metric (set by `annotate_study`)
            page.get_by_text("log_loss").first.wait_for(timeout=30_000)
            page.goto(f"{url}/trials")
            page.get_by_text("Trial 0", exact=True).first.wait_for(timeout=60_000)
            body = page.inner_text("body")
            assert f"{len(trials)} Trials" in body
            for t in finished:
                assert f"Trial {t.number}" in body
            # trial 0's details: its learner, its parameters, the user attributes
            assert "learner" in body and "fold_scores" in body and "fit_time" in body
            assert trials[0].params["learner"] in body
            page.goto(f"{url}/note")
            page.get_by_text("Reading the trials", exact=False).first.wait_for(timeout=30_000)
            page.screenshot(path=str(tmp_path / "dashboard.png"))
            assert not errors, errors
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=20)
        err = proc.stderr.read()
        assert rc in (0, 130), err
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([AUTOML, *args], capture_output=True, text=True, timeout=120, env=_env(),
                          check=False)


@pytest.mark.parametrize("case", ["missing", "file", "not_a_run", "no_database", "bad_json"])
def test_a_bad_folder_is_a_one_line_error(run_dir: Path, tmp_path: Path, case: str) -> None:
    target = tmp_path / "x"
    if case == "file":
        target.write_text("hello")
    elif case == "not_a_run":
        target.mkdir()
        (target / "notes.txt").write_text("")
    elif case == "no_database":
        _copy_run(run_dir, target)
        (target / "study.db").unlink()
        info = json.loads((target / "run.json").read_text())
        info["storage"] = "sqlite:////nowhere/study.db"
        (target / "run.json").write_text(json.dumps(info))
    elif case == "bad_json":
        _copy_run(run_dir, target)
        (target / "run.json").write_text("{not json")
    proc = _cli("dashboard", str(target), "--port", str(free_port()))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("automl: error: "), proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    if case == "no_database":
        assert not Path("/nowhere/study.db").exists()  # nothing created on the way


def test_a_port_in_use_is_a_one_line_error(run_dir: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = _cli("dashboard", str(run_dir), "--port", str(port))
    assert proc.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_moved_run_folder_finds_its_study(run_dir: Path, tmp_path: Path) -> None:
    moved = _copy_run(run_dir, tmp_path / "moved")
    run = open_run(moved)
    assert run.storage_url == f"sqlite:///{(moved / 'study.db').resolve()}"
    assert run.study_name == STUDY
    assert load_study(run).study_name == STUDY
    with pytest.raises(ModelFileError, match="study 'other' not found in"):
        load_study(RunFolder(path=moved, storage_url=run.storage_url, study_name="other"))


def test_annotations_are_idempotent_and_keep_a_users_note(run_dir: Path, tmp_path: Path) -> None:
    from optuna_dashboard import get_note, save_note

    run = open_run(_copy_run(run_dir, tmp_path / "run"))
    study = load_study(run)
    annotate_study(study, run)
    study = load_study(run)
    assert study.metric_names == ["log_loss"]
    note = get_note(study)
    assert note.startswith("## automl run") and "| metric | log_loss (minimize) |" in note
    best = study.best_trial
    assert f"| best trial | {best.number} ({best.params['learner']}) = " in note

    def system_attrs() -> dict:
        st = load_study(run)
        return st._storage.get_study_system_attrs(st._study_id)

    before = system_attrs()
    annotate_study(study, run)  # again: nothing changes
    assert system_attrs() == before
    assert run.summary is not None
    run.summary["elapsed_s"] = 12345.0  # the run changed (e.g. resumed): our note is refreshed
    annotate_study(study, run)
    assert "| elapsed | 12345.0 s |" in get_note(load_study(run))
    save_note(study, "my own notes")  # a user's note is kept
    annotate_study(study, run)
    assert get_note(load_study(run)) == "my own notes"
    assert isinstance(optuna.load_study(study_name=STUDY, storage=run.storage_url), optuna.Study)


def test_port_zero_picks_a_free_port_and_sigterm_stops_the_server(run_dir: Path) -> None:
    import urllib.request

    proc = subprocess.Popen([AUTOML, "dashboard", str(run_dir), "--port", "0", "--no-annotate"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        url = _wait_for_url(proc)
        port = int(re.match(r"http://127\.0\.0\.1:(\d+)/", url).group(1))  # type: ignore[union-attr]
        assert port > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=30) as resp:
            assert resp.status == 200 and STUDY in resp.read().decode()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        err = proc.stderr.read()
        assert "Traceback" not in err and "GET /api/studies" not in err  # request lines: --debug
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
