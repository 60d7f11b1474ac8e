"""Model folders from the command line: tampered folders refused before anything is
deserialized, and output folders replaced only atomically (``--force`` restores on failure)."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import signal

import pandas as pd
import pytest

from automl import cli
from automl.persistence import load_model, skops_io
from tests.runs import (
    exit_status,
    load_trials,
    plant_model_file,
    plugin_env,
    run_cli,
    start_cli,
    stderr_of,
    tiny_csv,
    wait_group_gone,
    wait_until,
)

FIT = ("--n-trials", "2", "--include", "logistic", "--quiet")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    base = tmp_path_factory.mktemp("fitted")
    data = tiny_csv(base / "d.csv")
    assert cli.main(["fit", str(data), "--target", "y", "--output", str(base / "model"), *FIT]) == 0
    return base / "model", data


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _tamper_bytes(folder, manifest):
    f = folder / manifest["members"][0]["file"]
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))


def _untrusted_type(folder, manifest):
    plant_model_file(folder, skops_io().dumps({"f": os.system}))  # would run code if loaded trusting it
    manifest.update(json.loads((folder / "manifest.json").read_text()))


def _escape(folder, manifest):
    manifest["members"][0]["file"] = "../evil.skops"


def _newer(folder, manifest):
    manifest["format_version"] = 99


@pytest.mark.parametrize(
    "tamper,pattern",
    [
        (None, None),
        (_tamper_bytes, "checksum"),
        (_untrusted_type, "allowlist"),
        (_escape, "outside the folder"),
        (_newer, "newer automl"),
    ],
    ids=["intact", "modified-bytes", "untrusted-type", "path-escape", "newer-format"],
)
def test_predict_refuses_a_tampered_folder_without_deserializing(fitted, tmp_path, tamper, pattern):
    model, data = fitted
    folder = tmp_path / "model"
    shutil.copytree(model, folder)
    if tamper is not None:
        manifest = json.loads((folder / "manifest.json").read_text())
        tamper(folder, manifest)
        (folder / "manifest.json").write_text(json.dumps(manifest))
    loads = tmp_path / "loads.log"
    env = plugin_env(AUTOML_PLUGINS="tests.deserialize_spy", AUTOML_TEST_LOADS=str(loads))
    res = run_cli("predict", folder, data, "--output", tmp_path / "p.csv", env=env)
    assert "Traceback" not in res.stderr
    if tamper is None:  # the spy sees a normal load: its absence below means something
        assert res.returncode == 0, res.stderr
        assert loads.read_text().splitlines() == ["loads"]
        return
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("automl: error: ") and pattern in lines[0], lines
    assert not loads.exists(), "a model file was deserialized"
    assert not (tmp_path / "p.csv").exists()


def test_existing_output_needs_force_and_force_restores_it_when_the_run_fails(fitted, tmp_path):
    model, data = fitted
    out = tmp_path / "out"
    shutil.copytree(model, out)
    before = _snapshot(out)
    res = run_cli("fit", data, "--target", "y", "--output", out, *FIT)
    assert res.returncode == 2 and "--force" in res.stderr and _snapshot(out) == before
    res = run_cli(
        "fit",
        data,
        "--target",
        "y",
        "--output",
        out,
        "--force",
        "--n-trials",
        2,
        "--include",
        "boom",
    )
    assert res.returncode == 1, res.stderr
    assert "no trial succeeded" in res.stderr and "Traceback" not in res.stderr
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing left aside
    assert load_model(out).predict(pd.read_csv(data).drop(columns="y")).shape == (200,)


def test_ctrl_c_during_force_restores_the_old_folder(fitted, tmp_path):
    model, data = fitted
    out = tmp_path / "out"
    shutil.copytree(model, out)
    before = _snapshot(out)
    started = datetime.datetime.now()  # Optuna's trial times are naive local times
    proc = start_cli(
        "fit",
        data,
        "--target",
        "y",
        "--output",
        out,
        "--force",
        "--time-budget",
        60,
        "--include",
        "sleepy",
        log_dir=tmp_path,
    )

    def new_run_going():
        # OUT holds the copied run until the new one moves it aside: count only trials
        # that started after the new process did
        trials = load_trials(f"sqlite:///{out}/study.db")
        ours = [t for t in trials if t.datetime_start and t.datetime_start > started]
        return sum(t.state.is_finished() for t in ours) >= 2

    wait_until(new_run_going, 90, "the new run's trials", proc)
    os.killpg(proc.pid, signal.SIGINT)
    assert exit_status(proc, tmp_path) == 130
    wait_group_gone(proc.pid)
    err = stderr_of(tmp_path).strip().splitlines()
    assert err[-1] == f"automl: interrupted; '{out}' keeps its earlier contents", err
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "run.err", "run.out"]


def _failing_manifest_write(monkeypatch):
    """Saving writes the model file, then fails writing the manifest (disk full)."""
    from automl import persistence

    real = persistence.atomic_write_text

    def write(path, text):
        if path.name == "manifest.json":
            raise OSError(28, "No space left on device")
        real(path, text)

    monkeypatch.setattr(persistence, "atomic_write_text", write)


@pytest.mark.parametrize("mode", ["--resume", "--force"])
def test_failed_save_keeps_the_earlier_model(fitted, tmp_path, monkeypatch, capfd, mode):
    model, data = fitted
    out = tmp_path / "out"
    shutil.copytree(model, out)
    manifest = (out / "manifest.json").read_bytes()
    _failing_manifest_write(monkeypatch)
    code = cli.main(
        [
            "fit",
            str(data),
            "--target",
            "y",
            "--output",
            str(out),
            mode,
            "--n-trials",
            "3",
            "--include",
            "logistic",
            "--quiet",
        ]
    )
    err = capfd.readouterr().err
    assert code == 3 and "No space left on device" in err and "Traceback" not in err, err
    assert (out / "manifest.json").read_bytes() == manifest
    assert load_model(out).predict(pd.read_csv(data).drop(columns="y")).shape == (200,)
    assert not list(out.glob(".*.tmp")) and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    # the copy resumed its own study, not the one of the folder it was copied from
    assert sum(t.state.is_finished() for t in load_trials(f"sqlite:///{model}/study.db")) == 2
