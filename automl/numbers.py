"""Numbers written as text: decimal commas and thousands separators.

A column's *number format* is decided once, from its training values, and stored in the
feature schema, so ``predict`` reads a column the way ``fit`` did:

- ``""`` (plain): what :func:`pandas.to_numeric` reads (``1234.5``, ``-1e-3``, ``inf``);
- ``"1,234.5"``: a comma (or space, or apostrophe) between groups of three digits, a point
  before the decimals;
- ``"1.234,5"``: a point (or space, or apostrophe) between groups of three digits, a comma
  before the decimals (a ``;``-separated file from a spreadsheet set to German or French).

Before that, :func:`bare` drops a currency sign (``$ € £ ¥``) before or after the number
and a trailing ``%``, reads a Unicode minus as ``-`` and accounting's ``(12)`` as ``-12``.
``12,345`` fits both of the last two; a column whose every value is like that is read
with the comma as thousands separator (12345), and the notice says so.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

PLAIN = ""
COMMA_THOUSANDS = "1,234.5"
COMMA_DECIMAL = "1.234,5"
FORMATS = (PLAIN, COMMA_THOUSANDS, COMMA_DECIMAL)
DETECT_SAMPLE = 5000  # values looked at to choose a column's format

_GAP = "' \u00a0\u202f"  # apostrophe, space, no-break spaces: thousands separators in both
# a grouped integer part starts with 1-9 ("0,126" is a decimal, never 126)
_PATTERNS = {
    COMMA_THOUSANDS: re.compile(rf"[+-]?(?:[1-9]\d{{0,2}}(?:[,{_GAP}]\d{{3}})+|\d+)(?:\.\d+)?"),
    COMMA_DECIMAL: re.compile(rf"[+-]?(?:[1-9]\d{{0,2}}(?:[.{_GAP}]\d{{3}})+|\d+)(?:,\d+)?"),
}
_CURRENCY_BEFORE = re.compile(r"^([+-]?)\s*[$€£¥]\s*(?=[\d(.])")
_UNIT_AFTER = re.compile(r"(?<=\d)\s*(?:%|[$€£¥])$")
_SEPARATORS = {COMMA_THOUSANDS: f"[,{_GAP}]", COMMA_DECIMAL: f"[.{_GAP}]"}


def parse(text: pd.Series, number_format: str) -> pd.Series:
    """Read text as float in ``number_format``; what does not fit becomes NaN.

    Example:
        >>> parse(pd.Series(["1.234,5", "-0,25", "abc"]), COMMA_DECIMAL).tolist()
        [1234.5, -0.25, nan]
    """
    if number_format not in FORMATS:
        raise ValueError(f"unknown number format {number_format!r}; expected one of {FORMATS}")
    s = bare(text)
    if number_format == PLAIN:
        values = pd.to_numeric(s.astype(object).where(s.notna(), np.nan), errors="coerce")
        return pd.Series(np.asarray(values, dtype=float), index=text.index, dtype=float)
    fits = s.str.fullmatch(_PATTERNS[number_format]).fillna(False).to_numpy(dtype=bool)
    digits = s.str.replace(_SEPARATORS[number_format], "", regex=True)
    if number_format == COMMA_DECIMAL:
        digits = digits.str.replace(",", ".", regex=False)
    values = pd.to_numeric(digits.where(fits), errors="coerce").astype(float)
    return pd.Series(values.to_numpy(), index=text.index, dtype=float)


def bare(text: pd.Series) -> pd.Series:
    """Text without what surrounds a number: spaces, a currency sign, a trailing ``%``; a
    Unicode minus becomes ``-`` and accounting's ``(12)`` becomes ``-12``.

    Example:
        >>> bare(pd.Series([" $1,200 ", "12.5%", "(3)", "\u22124 €"])).tolist()
        ['1,200', '12.5', '-3', '-4']
    """
    s = text.astype("string").str.strip().str.replace("\u2212", "-", regex=False)
    s = s.str.replace(_CURRENCY_BEFORE, r"\1", regex=True).str.replace(_UNIT_AFTER, "", regex=True)
    return s.str.replace(r"^\((\d.*)\)$", r"-\1", regex=True)


def row_sample(values: pd.Series, k: int) -> pd.Series:
    """At most ``k`` of ``values``, in their order: the same rows for the same length
    (seeded). numpy's sampler without replacement costs O(k); pandas' ``sample`` shuffles
    every row (0.08 s a column of 2,000,000 rows).

    Example:
        >>> row_sample(pd.Series(range(10)), 3).tolist() == row_sample(pd.Series(range(10)), 3).tolist()
        True
        >>> len(row_sample(pd.Series(range(10)), 20))
        10
    """
    if len(values) <= k:
        return values
    return values.iloc[np.sort(np.random.default_rng(0).choice(len(values), k, replace=False))]


def has_units(text: pd.Series) -> bool:
    """Whether :func:`bare` changes any value beyond trimming (currency, %, minus signs)."""
    sample = row_sample(text, DETECT_SAMPLE)
    trimmed = sample.astype("string").str.strip()
    return bool((bare(sample) != trimmed).fillna(False).any())


def detect(text: pd.Series) -> tuple[str, float, bool]:
    """Choose the format that reads most of ``text`` (non-missing strings).

    Returns the format, the fraction of the (sampled) values it reads, and whether the
    choice was a guess between thousands separator and decimal comma (``12,345``). Each
    distinct value is read once and counts as often as it occurs: a categorical column of
    a few words costs a few reads, not thousands.

    Example:
        >>> detect(pd.Series(["1,5", "2,25", "1.000,5"]))
        ('1.234,5', 1.0, False)
        >>> detect(pd.Series(["$1,200", "$1,200", "n/a", "$15"]))
        ('1,234.5', 0.75, True)
    """
    if len(text) == 0:
        return PLAIN, 0.0, False
    sample = row_sample(text, DETECT_SAMPLE)
    counts = sample.value_counts(dropna=True, sort=False)
    distinct = pd.Series(counts.index.to_numpy(dtype=object), dtype="string")
    n = counts.to_numpy(dtype=np.int64)

    def rate(ok: np.ndarray) -> float:  # of the sample (a missing value reads as nothing)
        return int(n[ok.astype(bool)].sum()) / len(sample)

    rates = {PLAIN: rate(parse(distinct, PLAIN).notna().to_numpy())}
    if rates[PLAIN] == 1.0:
        return PLAIN, 1.0, False
    distinct = bare(distinct)
    separated = distinct.str.contains(r"\d[,.'\s\u00a0\u202f]\d", regex=True).fillna(False)
    if not bool(separated.any()):
        return PLAIN, rates[PLAIN], False
    fits = {f: distinct.str.fullmatch(_PATTERNS[f]).fillna(False).to_numpy(dtype=bool)
            for f in (COMMA_THOUSANDS, COMMA_DECIMAL)}
    for f, ok in fits.items():
        rates[f] = rate(ok)
    best = max(FORMATS, key=lambda f: (rates[f], f == COMMA_THOUSANDS))
    if best == PLAIN or rates[best] <= rates[PLAIN]:
        return PLAIN, rates[PLAIN], False
    guessed = bool(np.array_equal(fits[COMMA_THOUSANDS], fits[COMMA_DECIMAL])) and bool(
        distinct.str.contains(",", regex=False).fillna(False).any())
    return best, rates[best], guessed


def describe(number_format: str) -> str:
    """How a format reads, for notices: ``'1.234,5' (decimal comma)``."""
    if number_format == COMMA_DECIMAL:
        return "'1.234,5' (decimal comma)"
    if number_format == COMMA_THOUSANDS:
        return "'1,234.5' (thousands separators)"
    return "'1234.5'"
