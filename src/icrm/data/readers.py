"""Raw rows from wherever the user's data lives, and the error that points into them.

Rows come from JSONL/JSON/Parquet/CSV files (gzipped or not), a
``datasets.load_from_disk`` directory, a hub dataset id, or memory (a
``datasets.Dataset`` or a list of dicts). Each row keeps its 1-based line or
row number, so every later check can raise a :class:`DataError` naming the
file, the line and the field, which the CLI turns into a one-line message and
exit code 2. Values are made plain (JSON-ready) here, once, because outputs
such as ``icrm score`` echo every column back as read.
"""

from __future__ import annotations

import datetime
import gzip
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError


class DataError(UserError):
    """A problem with the user's input, located as precisely as possible."""

    def __init__(self, source: str, message: str, line: int | None = None, field: str | None = None):
        where = f"{source}:{line}" if line is not None else str(source)
        text = f"{where}: {field}: {message}" if field else f"{where}: {message}"
        super().__init__(text)
        self.source, self.line, self.field = source, line, field


@dataclass
class Row:
    """One raw record and where it came from (1-based line or row number)."""

    line: int
    data: dict[str, Any]


def read_rows(source, split: str | None = None, name: str | None = None) -> list[Row]:
    """Read raw records from a file, a saved dataset directory, a hub id, or memory.

    In memory: a ``datasets.Dataset`` / ``IterableDataset`` (read through) or
    a list of dicts, named ``name`` in errors, rows numbered from 1.
    """
    if not isinstance(source, (str, Path)):
        return _read_in_memory(source, name or "dataset")
    path = Path(source)
    name = str(source)
    if path.is_dir():
        return _read_saved_dataset(path, split)
    if not path.exists():
        if re.fullmatch(r"[\w.-]+/[\w.-]+", name) and not name.endswith((".json", ".jsonl", ".csv", ".parquet", ".gz")):
            return _read_hub_dataset(name, split)
        raise DataError(name, "file not found")
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    kind = suffixes[-1] if suffixes else ""
    try:
        if kind == ".jsonl":
            rows = _read_jsonl(path)
        elif kind == ".json":
            rows = _read_json(path)
        elif kind in (".parquet", ".csv"):
            rows = _read_table(path, kind)
        else:
            raise DataError(name, f"unknown file type {path.suffix!r} (expected .jsonl, .json, .parquet, .csv)")
    except (OSError, UnicodeDecodeError, EOFError) as err:
        raise DataError(name, f"cannot read file ({err.__class__.__name__}: {err})") from err
    if not rows:
        raise DataError(name, "no rows (empty file)")
    return rows


def _open_text(path: Path):
    """Text of a (gzipped) file; a byte-order mark some editors write is skipped."""
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig")
    return open(path, encoding="utf-8-sig")


def _read_jsonl(path: Path) -> list[Row]:
    rows = []
    with _open_text(path) as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                data = json.loads(text.rstrip("\r\n"))  # with the newline, a cut-off row's error is at column 1 of the next line
            except json.JSONDecodeError as err:
                raise DataError(str(path), _invalid_json(err), number) from err
            if not isinstance(data, dict):
                raise DataError(str(path), "expected a JSON object per line", number)
            rows.append(Row(number, data))
    return rows


def _invalid_json(err: json.JSONDecodeError) -> str:
    """``invalid JSON (Expecting value at column 5)``; a message may end in "at" already ("… starting at")."""
    return f"invalid JSON ({err.msg.removesuffix(' at')} at column {err.colno})"


def _read_json(path: Path) -> list[Row]:
    with _open_text(path) as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as err:
            raise DataError(str(path), _invalid_json(err), err.lineno) from err
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError(str(path), "expected a JSON list of objects (or an object holding one list)")
        data = lists[0]
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise DataError(str(path), "expected a JSON list of objects")
    return [Row(i, item) for i, item in enumerate(data, start=1)]


def _read_table(path: Path, kind: str) -> list[Row]:
    import pandas as pd

    try:
        frame = pd.read_parquet(path) if kind == ".parquet" else pd.read_csv(path, keep_default_na=False)
    except Exception as err:  # pandas/pyarrow raise many types for unreadable files
        raise DataError(str(path), f"cannot read {kind[1:]} file ({err})") from err
    offset = 2 if kind == ".csv" else 1  # CSV line 1 is the header
    return [Row(i + offset, _plain(record)) for i, record in enumerate(frame.to_dict("records"))]


def _plain(value: Any) -> Any:
    """Turn numpy scalars/arrays from pandas/arrow into plain Python values, and dates into ISO text.

    Plain means JSON-ready: ``icrm score`` writes every column back as read.
    """
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _read_saved_dataset(path: Path, split: str | None) -> list[Row]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as err:
        raise DataError(str(path), f"not a saved dataset directory ({err})") from err
    if isinstance(loaded, datasets.DatasetDict):
        split = split or ("train" if "train" in loaded else next(iter(loaded)))
        if split not in loaded:
            raise DataError(str(path), f"no split {split!r} (have {', '.join(loaded)})")
        loaded = loaded[split]
    return [Row(i, _plain(record)) for i, record in enumerate(loaded, start=1)]


def _read_in_memory(dataset, name: str) -> list[Row]:
    import datasets

    if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        raise DataError(name, f"a DatasetDict; pass one split (e.g. dataset['train'], have {', '.join(dataset)})")
    if not isinstance(dataset, (datasets.Dataset, datasets.IterableDataset, list, tuple)):
        raise DataError(name, f"expected a datasets.Dataset or a list of dicts, got {type(dataset).__name__}")
    rows = []
    for number, record in enumerate(dataset, start=1):
        if not isinstance(record, dict):
            raise DataError(name, f"expected a dict per row, got {type(record).__name__}", number)
        rows.append(Row(number, _plain(record)))
    if not rows:
        raise DataError(name, "no rows (empty dataset)")
    return rows


def _read_hub_dataset(name: str, split: str | None) -> list[Row]:
    import datasets

    try:
        loaded = datasets.load_dataset(name, split=split or "train")
    except Exception as err:
        raise DataError(name, f"cannot load hub dataset ({err.__class__.__name__}: {err})") from err
    return [Row(i, _plain(record)) for i, record in enumerate(loaded, start=1)]
