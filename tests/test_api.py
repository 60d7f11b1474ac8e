"""The scikit-learn API: the estimator contract, pipelines and cross-validation."""

from sklearn.datasets import load_diabetes, load_iris
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from automl import AutoMLClassifier, AutoMLRegressor

FAST = dict(n_trials=2, time_budget=None, include=["lightgbm", "logistic", "ridge"])


# Every check of scikit-learn's suite runs. Small budgets keep it quick; no check is skipped
# (scikit-learn itself skips `check_array_api_input` unless SCIPY_ARRAY_API is set).
@parametrize_with_checks([AutoMLClassifier(**FAST), AutoMLRegressor(**FAST)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_in_pipeline_and_cross_val_score():
    X, y = load_iris(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), AutoMLClassifier(**FAST))
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.mean() > 0.85


def test_fitted_attributes_on_a_frame(mixed_frame):
    X = mixed_frame.drop(columns="label")
    y = mixed_frame["label"]
    clf = AutoMLClassifier(n_trials=3, time_budget=None).fit(X, y)
    assert list(clf.classes_) == ["neg", "pos"]
    assert clf.best_learner_ in {"lightgbm", "hist_gb", "random_forest"}
    assert len(clf.leaderboard_) == 3
    assert sum(t.state.is_finished() for t in clf.study_.trials) == 3
    assert hasattr(clf.best_estimator_, "predict_proba")
    assert clf.predict(X.head(3)).tolist()[0] in ("neg", "pos")
    assert clf.score(X, y) > 0.7


def test_regressor_beats_the_mean():
    X, y = load_diabetes(return_X_y=True)
    reg = AutoMLRegressor(n_trials=3, time_budget=None).fit(X[:300], y[:300])
    assert reg.score(X[300:], y[300:]) > 0.2
