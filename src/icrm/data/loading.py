"""``load_examples``: a data source in, validated examples of one format out.

A file holds one format; a row in another format, or an invalid row, stops
the load at that row, unless the caller asks to skip invalid rows, which are
then counted and the first one is reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..outputs import warn
from .examples import StepExample
from .formats import CONVERTERS, FORMAT_ALIASES, detect_format
from .readers import DataError, read_rows
from .steps import DEFAULT_SEPARATOR


@dataclass
class LoadedData:
    """Validated examples of one format, with a count of the rows skipped."""

    source: str
    format: str
    examples: list
    skipped: int = 0
    errors: list[str] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)  # each example's record as read, for outputs that echo it


def load_examples(
    source,
    *,
    expect: Iterable[str] | None = None,
    split: str | None = None,
    skip_invalid: bool = False,
    limit: int | None = None,
    name: str | None = None,
    step_separator: str = DEFAULT_SEPARATOR,
    require_labels: bool = True,
) -> LoadedData:
    """Read and validate data; every row must be in one format.

    ``source`` is a path or hub id (see :func:`read_rows`), a
    ``datasets.Dataset``/``IterableDataset`` or a list of dicts (then errors
    call it ``name``). ``expect`` restricts the accepted formats (e.g.
    ``("pairwise",)`` for ``icrm eval``). With ``skip_invalid`` a bad row is
    counted and skipped instead of stopping the run. ``step_separator`` joins
    the steps of stepwise rows into their response. ``require_labels=False``
    accepts pointwise rows without ``label`` (see :func:`detect_format`).
    """
    name = name or (str(source) if isinstance(source, (str, Path)) else "dataset")
    if not step_separator:
        raise DataError(name, "the step separator must not be empty")
    rows = read_rows(source, split, name)
    if limit is not None:
        rows = rows[:limit]
    fmt = None
    examples, records, errors = [], [], []
    for row in rows:
        try:
            detected = detect_format(row, name, require_labels)
            kind = FORMAT_ALIASES.get(detected, detected)
            if fmt is None:
                if expect is not None and kind not in expect:
                    raise DataError(name, f"this command needs {' or '.join(expect)} data, got {kind}", row.line)
                fmt = kind
            elif kind != fmt:
                raise DataError(name, f"mixed formats in one file ({fmt} rows, then a {kind} row)", row.line)
            example = CONVERTERS[detected](row, name)
            if isinstance(example, StepExample):
                example.separator = step_separator
            examples.append(example)
            records.append(row.data)
        except DataError as err:
            if not skip_invalid:
                raise
            errors.append(str(err))
    if not examples:
        raise DataError(name, f"no valid rows ({len(errors)} skipped; first: {errors[0] if errors else '-'})")
    if errors:
        warn(f"skipped {len(errors)} invalid row(s) of {name} (--skip-invalid); the first: {errors[0]}")
    return LoadedData(name, fmt, examples, skipped=len(errors), errors=errors, rows=records)
