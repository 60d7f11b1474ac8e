"""Preprocessing pieces that the learner styles share."""

import numpy as np
import pandas as pd

from automl.preprocessing import MissingFlags, make_preprocessor
from automl.schema import infer_schema


def test_missing_flags_are_0_1_and_only_for_columns_missing_often_enough():
    train = pd.DataFrame({"often": [np.nan] * 5 + [1.0] * 5, "once": [np.nan] + [2.0] * 9,
                          "never": np.arange(10.0)})
    flags = MissingFlags(min_count=5).fit(train)
    assert list(flags.get_feature_names_out()) == ["often_missing"]
    new = pd.DataFrame({"often": [np.nan, 3.0], "once": [np.nan, np.nan], "never": [np.nan, 1.0]})
    np.testing.assert_array_equal(flags.transform(new), [[1.0], [0.0]])


def test_linear_style_keeps_flags_unscaled_beside_scaled_numbers():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    frame.loc[:19, "a"] = np.nan  # 20 rows: flagged
    frame.loc[:0, "b"] = np.nan  # 1 row: imputed, not flagged
    pre = make_preprocessor(infer_schema(frame), "linear", n_rows=len(frame))
    out = pre.fit_transform(frame)
    names = list(pre.get_feature_names_out())
    assert names == ["num__a", "num__b", "miss__a_missing"]
    assert set(np.unique(out[:, 2])) == {0.0, 1.0}
    np.testing.assert_allclose(out[:, :2].mean(axis=0), 0.0, atol=1e-9)


def test_tree_style_codes_a_many_level_categorical_with_rows_enough_for_native_splits():
    """storm_wind's 260 storm names: codes for LightGBM's and CatBoost's own categorical
    splits (test RMSE 3.53 against 3.96 target-encoded); too few rows a level, or more
    levels than MAX_NATIVE_LEVELS, stay target-encoded. HistGradientBoosting takes at most
    MAX_ORDINAL_LEVELS levels natively, so it splits on the 260 codes as numbers."""
    from automl.preprocessing import MAX_ORDINAL_LEVELS, categorical_indices

    rng = np.random.default_rng(0)

    def frame(n_rows, n_levels):
        names = np.array([f"s{i}" for i in range(n_levels)])
        return pd.DataFrame({"x": rng.normal(size=n_rows), "name": names[np.arange(n_rows) % n_levels],
                             "few": rng.choice(["a", "b", "c"], size=n_rows)})

    def fitted(X):
        y = rng.normal(size=len(X))
        pre = make_preprocessor(infer_schema(X), "tree", n_rows=len(X), task="regression")
        pre.fit_transform(X, y)
        return pre, list(pre.get_feature_names_out())

    pre, names = fitted(frame(20 * 260, 260))
    assert names == ["num__x", "cat__name", "cat__few"]
    assert categorical_indices(pre) == [1, 2]
    assert categorical_indices(pre, MAX_ORDINAL_LEVELS) == [2]  # HistGradientBoosting's
    _, names = fitted(frame(10 * 260, 260))  # 10 rows a level: target-encoded
    assert names == ["num__x", "hicat__name", "cat__few"]
    _, names = fitted(frame(20 * 1100, 1100))  # more than MAX_NATIVE_LEVELS
    assert names[1] == "hicat__name" and names[-1] == "cat__few"
