"""The report's figure for image tasks: a grid of misclassified validation images.

The most confidently wrong first, each with its true and predicted label and the
probability given to the prediction; thumbnails are embedded as JPEG data URIs, so the
report stays one offline file.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np

MAX_IMAGES = 24
THUMBNAIL = 128  # pixels, longer side


def image_columns(v: Any) -> list[str]:
    """The image columns of the validation frame (paths), from the estimator or the frame."""
    arch = getattr(v.estimator, "arch_", None)
    if isinstance(arch, dict) and arch.get("columns"):
        return [c for c in arch["columns"] if c in v.X_valid.columns]
    from pathlib import Path

    from automl.images import looks_like_image_column

    return [c for c in v.X_valid.columns if looks_like_image_column(v.X_valid[c], Path.cwd())]


def _thumbnail(path: str) -> str:
    from automl.images import open_rgb

    img = open_rgb(path)
    img.thumbnail((THUMBNAIL, THUMBNAIL))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def misclassified_grid(v: Any, max_images: int = MAX_IMAGES) -> str:
    """An HTML grid of the validation images whose predicted class is wrong.

    ``v`` is the report's :class:`automl.report.refit.Validation` (classification); the
    grid's style (``.imggrid``) is in the report's ``style.css``.
    """
    cols = image_columns(v)
    if not cols:
        return ""
    pred = np.asarray(v.pred, dtype=float)
    predicted = pred.argmax(axis=1)
    wrong = np.flatnonzero(predicted != np.asarray(v.y_valid))
    if len(wrong) == 0:
        return '<p>No validation image is misclassified.</p>'
    wrong = wrong[np.argsort(-pred[wrong, predicted[wrong]])][:max_images]
    classes = list(v.classes or range(pred.shape[1]))
    cells = []
    for i in wrong:
        path = v.X_valid[cols[0]].iloc[i]
        try:
            src = _thumbnail(str(path))
            img = f'<img src="{src}" alt="{html.escape(str(path))}" title="{html.escape(str(path))}">'
        except Exception as exc:  # noqa: BLE001 - an unreadable file is shown as such
            img = f'<div class="noimg">cannot read: {html.escape(type(exc).__name__)}</div>'
        true, said = classes[int(v.y_valid[i])], classes[int(predicted[i])]
        cells.append(f'<figure>{img}<figcaption>true <b>{html.escape(str(true))}</b><br>predicted '
                     f'<b>{html.escape(str(said))}</b> ({pred[i, predicted[i]]:.2f})</figcaption></figure>')
    shown = f"{len(wrong)} of {int((predicted != np.asarray(v.y_valid)).sum())}"
    return (f"<h3>Misclassified validation images <span class=\"dim\">({shown}, most "
            f"confident first; column '{html.escape(cols[0])}')</span></h3>"
            f'<div class="imggrid">{"".join(cells)}</div>')
