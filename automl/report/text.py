"""For text tasks in the report: the validation examples the best model got most confidently wrong.

A row is wrong when its predicted class (the most probable) is not its true class; the
confidence is the probability given to the predicted class. The table shows the text
column(s), the true and predicted class and that probability, most confident first.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import pandas as pd

MAX_ROWS = 20
MAX_CHARS = 400  # a longer text is cut, with an ellipsis


def confident_mistakes(texts: pd.DataFrame, y_true: np.ndarray, proba: np.ndarray,
                       classes: list | None, n: int = MAX_ROWS) -> pd.DataFrame:
    """The ``n`` wrong predictions with the highest predicted-class probability.

    Example:
        >>> confident_mistakes(pd.DataFrame({"t": ["a", "b"]}), np.array([0, 1]),
        ...                    np.array([[0.1, 0.9], [0.2, 0.8]]), ["x", "y"])[["t", "true", "predicted"]]
           t true predicted
        0  a    x         y
    """
    proba = np.asarray(proba, dtype=float)
    predicted = np.argmax(proba, axis=1)
    confidence = proba[np.arange(len(predicted)), predicted]
    wrong = np.flatnonzero(predicted != np.asarray(y_true))
    order = wrong[np.argsort(-confidence[wrong], kind="stable")][:n]
    names = list(classes) if classes is not None else list(range(proba.shape[1]))
    out = texts.iloc[order].reset_index(drop=True).copy()
    out["true"] = [names[int(i)] for i in np.asarray(y_true)[order]]
    out["predicted"] = [names[int(i)] for i in predicted[order]]
    out["probability"] = confidence[order]
    return out


def _cell(value: Any) -> str:
    text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
    if len(text) > MAX_CHARS:
        text = text[:MAX_CHARS] + "…"
    return html.escape(text, quote=True)


def mistakes_table(v: Any, text_columns: list[str], n: int = MAX_ROWS) -> tuple[str, str]:
    """An HTML table of the most confidently wrong rows of a report ``Validation``, and a
    one-line caption (how many rows were wrong)."""
    table = confident_mistakes(v.X_valid[text_columns], v.y_valid, v.pred, v.classes, n)
    n_wrong = int((np.argmax(v.pred, axis=1) != v.y_valid).sum())
    caption = (f"Most confidently wrong validation examples: {len(table)} of the {n_wrong} wrong "
               f"predictions among {len(v.y_valid)} rows, by the probability given to the "
               "predicted class.")
    if table.empty:
        return "", caption
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    rows = []
    for _, row in table.iterrows():
        cells = [f'<td class="c-params">{_cell(row[c])}</td>' for c in text_columns]
        cells += [f"<td>{_cell(row['true'])}</td>", f"<td>{_cell(row['predicted'])}</td>",
                  f"<td>{row['probability']:.3f}</td>"]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    body = (f'<div class="scroll"><table class="board"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")
    return body, caption
