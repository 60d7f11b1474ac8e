"""Dataset manifest reading and the fixed, cached train/test splits."""
from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

SUPPORTED_TASKS = ("binary", "multiclass", "regression")
TEST_SIZE = 0.2
SPLIT_FORMAT_VERSION = 1
# Strings that count as a missing target besides the empty cell.
MISSING_TARGET = {"", "?", "NA", "N/A", "NaN", "nan", "null", "None"}


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    task: str
    target: str
    file: Path


@dataclass(frozen=True)
class Split:
    """Paths and facts of one cached split. `test_features` has no target column."""

    spec: DatasetSpec
    train: Path
    test: Path
    test_features: Path
    classes: tuple[str, ...]  # every class in the (target-non-missing) data; () for regression
    n_train: int
    n_test: int


def read_manifest(datasets_dir: Path) -> dict[str, DatasetSpec]:
    """Return the manifest rows with a supported task, keyed by dataset name."""
    manifest = datasets_dir / "MANIFEST.tsv"
    if not manifest.is_file():
        raise FileNotFoundError(f"dataset manifest not found: {manifest}")
    specs: dict[str, DatasetSpec] = {}
    with manifest.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            missing = {"name", "task", "target", "file"} - set(row)
            if missing:
                raise ValueError(f"{manifest}: missing columns {sorted(missing)}")
            if row["task"] not in SUPPORTED_TASKS:
                continue
            specs[row["name"]] = DatasetSpec(
                name=row["name"], task=row["task"], target=row["target"],
                file=datasets_dir / row["file"],
            )
    return specs


def read_manifests(folders: list[Path]) -> dict[str, DatasetSpec]:
    """The datasets of several folders in one table; a name in two of them is refused."""
    specs: dict[str, DatasetSpec] = {}
    for folder in folders:
        for name, spec in read_manifest(folder).items():
            if name in specs:
                raise SystemExit(f"dataset {name!r} is in both {specs[name].file.parent} and "
                                 f"{folder}; give only one of them with --datasets-dir")
            specs[name] = spec
    return specs


def select_datasets(specs: dict[str, DatasetSpec], names: list[str] | None) -> list[DatasetSpec]:
    if not names:
        return list(specs.values())
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise SystemExit(
            f"unknown or unsupported dataset(s): {', '.join(unknown)}; "
            f"choose from: {', '.join(specs)}"
        )
    return [specs[n] for n in names]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_raw(spec: DatasetSpec) -> pd.DataFrame:
    """Read every cell as text so the split files reproduce the source cells exactly."""
    frame = pd.read_csv(spec.file, dtype=str, keep_default_na=False, na_filter=False)
    if spec.target not in frame.columns:
        raise ValueError(f"{spec.name}: target column {spec.target!r} not in {spec.file}")
    keep = ~frame[spec.target].str.strip().isin(MISSING_TARGET)
    frame = frame.loc[keep].reset_index(drop=True)
    if spec.task == "regression":
        values = pd.to_numeric(frame[spec.target], errors="coerce")
        if values.isna().any():
            raise ValueError(f"{spec.name}: non-numeric regression target values")
    return frame


def _split_indices(frame: pd.DataFrame, spec: DatasetSpec, seed: int) -> tuple[np.ndarray, np.ndarray]:
    index = np.arange(len(frame))
    if spec.task == "regression":
        return train_test_split(index, test_size=TEST_SIZE, random_state=seed, shuffle=True)
    labels = frame[spec.target].to_numpy()
    counts = pd.Series(labels).value_counts()
    singletons = np.isin(labels, counts[counts < 2].index.to_numpy())
    # A class with one row cannot be stratified: that row goes to train.
    rest = index[~singletons]
    train_idx, test_idx = train_test_split(
        rest, test_size=TEST_SIZE, random_state=seed, shuffle=True, stratify=labels[rest],
    )
    return np.sort(np.concatenate([train_idx, index[singletons]])), np.sort(test_idx)


def _class_list(frame: pd.DataFrame, spec: DatasetSpec) -> tuple[str, ...]:
    if spec.task == "regression":
        return ()
    return tuple(sorted(frame[spec.target].unique().tolist()))


def prepare_split(spec: DatasetSpec, cache_dir: Path, seed: int) -> Split:
    """Create (once) and return the cached split for `spec`."""
    out = cache_dir / f"{spec.name}-seed{seed}"
    meta_path = out / "split.json"
    source_sha = _sha256(spec.file)
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("source_sha256") == source_sha and meta.get("format") == SPLIT_FORMAT_VERSION:
            return _split_from_meta(spec, out, meta)
    frame = _read_raw(spec)
    train_idx, test_idx = _split_indices(frame, spec, seed)
    out.mkdir(parents=True, exist_ok=True)
    train, test = frame.iloc[train_idx], frame.iloc[test_idx]
    train.to_csv(out / "train.csv", index=False)
    test.to_csv(out / "test.csv", index=False)
    test.drop(columns=[spec.target]).to_csv(out / "test_features.csv", index=False)
    meta = {
        "format": SPLIT_FORMAT_VERSION, "dataset": spec.name, "task": spec.task,
        "target": spec.target, "source": str(spec.file), "source_sha256": source_sha,
        "seed": seed, "test_size": TEST_SIZE, "n_train": len(train), "n_test": len(test),
        "n_dropped_missing_target": int(_count_lines(spec.file) - len(frame)),
        "classes": list(_class_list(frame, spec)),
    }
    meta_path.write_text(json.dumps(meta, indent=2))
    return _split_from_meta(spec, out, meta)


def _count_lines(path: Path) -> int:
    return len(pd.read_csv(path, usecols=[0], dtype=str, keep_default_na=False))


def _split_from_meta(spec: DatasetSpec, out: Path, meta: dict) -> Split:
    return Split(
        spec=spec, train=out / "train.csv", test=out / "test.csv",
        test_features=out / "test_features.csv", classes=tuple(meta["classes"]),
        n_train=int(meta["n_train"]), n_test=int(meta["n_test"]),
    )


def capped_train(split: Split, max_rows: int | None, seed: int) -> tuple[Path, int]:
    """Return the training file to use: the full one, or a fixed-seed subsample of `max_rows`."""
    if not max_rows or max_rows >= split.n_train:
        return split.train, split.n_train
    path = split.train.with_name(f"train_max{max_rows}.csv")
    if not path.is_file():
        frame = pd.read_csv(split.train, dtype=str, keep_default_na=False, na_filter=False)
        frame.sample(n=max_rows, random_state=seed).sort_index().to_csv(path, index=False)
    return path, max_rows
