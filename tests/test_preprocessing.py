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
