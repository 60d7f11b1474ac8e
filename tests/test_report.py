"""``automl report``: real runs (multiclass, regression, binary), one offline HTML file each,
rendered in a real headless Chromium; the refit reproduces the search's fold score."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from automl.report import build_report
from automl.report.learners import learner_study
from automl.report.refit import refit_on_first_split
from automl.rundir import load_study, open_run
from tests.browser import chromium, distinct_colours
from tests.conftest import AUTOML, EXAMPLE, shared_dataset


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONWARNINGS": "ignore"}


def _fit(data: Path, target: str, out: Path, *extra: str) -> Path:
    proc = subprocess.run([AUTOML, "fit", str(data), "--target", target, "--output", str(out),
                           "--quiet", *extra], capture_output=True, text=True, timeout=300,
                          env=_env(), check=False)
    assert proc.returncode == 0, proc.stderr
    return out


def _report(run: Path, out: Path, *extra: str) -> tuple[str, float]:
    t0 = time.monotonic()
    proc = subprocess.run([AUTOML, "report", str(run), "--output", str(out), *extra],
                          capture_output=True, text=True, timeout=300, env=_env(), check=False)
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return out.read_text(encoding="utf-8"), took


@pytest.fixture(scope="module")
def clf_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # two quick learners and ten trials: enough for importances, parallel coordinates, slices
    return _fit(EXAMPLE, "species", tmp_path_factory.mktemp("clf") / "out",
                "--include", "logistic,knn", "--n-trials", "10")


@pytest.fixture(scope="module")
def reg_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = shared_dataset("abalone")
    return _fit(data, "rings", tmp_path_factory.mktemp("reg") / "out",
                "--include", "lightgbm,ridge", "--n-trials", "4")


def _render(path: Path, shot: Path) -> dict:
    """Open the report offline in Chromium; what drew, what it says, how colourful it is."""
    with chromium(offline=True) as ctx:
        page = ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(path.resolve().as_uri())
        page.wait_for_selector(".plotly .main-svg", timeout=60_000)
        page.wait_for_function(
            "document.querySelectorAll('.js-plotly-plot').length === "
            "document.querySelectorAll('.plotly-graph-div').length", timeout=60_000)
        png = page.screenshot(path=str(shot), full_page=True)
        return {
            "errors": errors, "blocked": list(ctx.blocked),
            "plots": page.locator(".js-plotly-plot").count(),
            "divs": page.locator(".plotly-graph-div").count(),
            "svgs": page.locator(".plotly .main-svg").count(),
            "titles": page.locator(".gtitle").all_text_contents(),
            "text": page.inner_text("body"),
            "colours": distinct_colours(page, png),
            "marks": page.locator(".plotly .main-svg .point, .plotly .main-svg .bars path, "
                                  ".plotly .main-svg .scatterlayer .trace path, "
                                  ".plotly .main-svg .heatmaplayer image").count(),
        }


def _check_self_contained(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("plotly.js v") == 1  # the library, inline, once ...
    head, _, rest = page.partition('<script type="text/javascript">/**')
    rest = rest[rest.index("</script>"):]  # ... and the page around it:
    tags = re.findall(r"<script\b[^>]*>", head + rest)
    assert tags and not any("src" in t for t in tags), tags  # every script inline
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", head + rest)  # nothing fetched


def test_classification_report(clf_run: Path, tmp_path: Path) -> None:
    page, took = _report(clf_run, tmp_path / "report.html")
    assert took < 60, f"report took {took:.1f}s"  # ~5-10 s on an idle machine
    _check_self_contained(page)
    seen = _render(tmp_path / "report.html", tmp_path / "report.png")
    assert not seen["errors"] and not seen["blocked"], seen
    assert seen["plots"] == seen["divs"] >= 10
    assert seen["svgs"] >= 2 * seen["plots"]
    assert seen["colours"] > 1000 and seen["marks"] > 20
    titles = " | ".join(seen["titles"])
    for title in ("Optimization history (log_loss)", "Best log_loss per learner",
                  "Timeline of the trials", "Parallel coordinates: ", "Slices: ",
                  "Hyperparameter importances: ", "Confusion matrix", "ROC curve",
                  "Precision-recall curve", "Permutation feature importance"):
        assert title in titles, (title, titles)
    text = seen["text"]
    assert "Run summary" in text and "multiclass" in text and "5-fold cross-validation" in text
    assert "Leaderboard" in text and "Adelie" in text  # the classes on the confusion matrix
    m = re.search(r"log_loss = ([\d.]+); the search recorded ([\d.]+) on this split", text)
    assert m and float(m.group(1)) == pytest.approx(float(m.group(2)), rel=1e-3), text[-3000:]


@pytest.mark.slow  # ~13 s; the classification report runs by default
def test_regression_report(reg_run: Path, tmp_path: Path) -> None:
    page, _ = _report(reg_run, tmp_path / "report.html")
    _check_self_contained(page)
    seen = _render(tmp_path / "report.html", tmp_path / "report.png")
    assert not seen["errors"] and not seen["blocked"], seen
    titles = " | ".join(seen["titles"])
    for title in ("Optimization history (rmse)", "Timeline of the trials", "Residuals",
                  "Permutation feature importance"):
        assert title in titles, (title, titles)
    assert "Confusion matrix" not in titles and "ROC" not in titles
    assert seen["svgs"] >= 2 * seen["plots"] and seen["colours"] > 500
    assert "regression" in seen["text"] and "rings" in seen["text"]


def test_the_refit_reproduces_the_search_on_split_one(reg_run: Path) -> None:
    run = open_run(reg_run)
    study = load_study(run)
    v = refit_on_first_split(run, study)
    assert v.trial.number == study.best_trial.number
    assert v.score == pytest.approx(v.trial.user_attrs["fold_scores"][0], rel=1e-4)
    n_rows = json.loads((reg_run / "summary.json").read_text())["n_rows"]
    assert len(v.y_valid) + v.n_train == n_rows


def test_a_missing_data_file_is_noted_and_the_study_plots_stay(reg_run: Path,
                                                                tmp_path: Path) -> None:
    moved = tmp_path / "run"
    shutil.copytree(reg_run, moved)
    for name in ("run.json", "summary.json"):
        info = json.loads((moved / name).read_text())
        info["data"] = str(tmp_path / "gone.csv")
        (moved / name).write_text(json.dumps(info))
    page = build_report(open_run(moved))
    assert "gone.csv&#x27; is gone (moved or deleted)" in page
    assert "Optimization history (rmse)" in page and "Timeline of the trials" in page
    assert "Residuals" not in page


def test_single_learner_and_few_trials_get_notes_not_failures(tmp_path: Path) -> None:
    run = _fit(shared_dataset("titanic"), "Survived", tmp_path / "out", "--include", "logistic",
               "--n-trials", "2", "--ignore-columns", "Name,Ticket,Cabin")
    page = build_report(open_run(run))
    assert "Only one learner (logistic) has completed trials." in page
    assert "hyperparameter importances need at least" in page or "only C varied" in page \
        or "no hyperparameter varied" in page
    assert "ROC curve" in page and "Precision-recall curve" in page  # binary: one curve each
    assert "Could not draw" not in page


def test_learner_study_strips_the_prefix(clf_run: Path) -> None:
    study = load_study(open_run(clf_run))
    sub = learner_study(study, "knn")
    assert sub.trials and all(not k.startswith("knn__") and k != "learner"
                              for t in sub.trials for k in t.params)
    numbers = {t.user_attrs["number"] for t in sub.trials}
    assert numbers == {t.number for t in study.trials
                       if t.params.get("learner") == "knn" and t.state.name == "COMPLETE"}


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_a_bad_folder_is_a_one_line_error(tmp_path: Path, make: str) -> None:
    target = tmp_path / "x"
    if make == "empty":
        target.mkdir()
    proc = subprocess.run([AUTOML, "report", str(target)], capture_output=True, text=True,
                          timeout=120, env=_env(), check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("automl: error: ")


def test_the_page_inlines_the_style_sheet_shipped_with_the_package() -> None:
    from importlib.resources import files

    from automl.report.page import Section, render_html

    css = files("automl.report").joinpath("style.css").read_text(encoding="utf-8")
    assert "table.board" in css and ".imggrid" in css
    page = render_html("a title", "a subtitle", [Section("s", "A section", notes=["a note"])], "")
    assert f"<style>{css}</style>" in page and '<p class="note">a note</p>' in page
    assert "url(" not in css and "@import" not in css  # nothing fetched from the style sheet
