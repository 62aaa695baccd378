"""Progress bars and all-or-nothing outputs.

Progress is drawn as rich bars on a terminal; redirected to a file or pipe it
is plain lines instead (a carriage-return bar there is one endless line).

Every command writes its results into a staging path next to the target and
renames it into place only at the end, so a failed or interrupted run never
leaves a half-written output behind. Before any work, :func:`check_output`
makes sure the target is icrm's to replace, so a run never deletes a
user's files.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from .errors import UserError

console = Console(stderr=True)
QUIET = {"value": os.environ.get("ICRM_QUIET") == "1"}
JSON_LOGS = {"value": False}
LINE_INTERVAL_S = 30.0  # off a terminal: one progress line per this many seconds, and one at the end


def set_quiet(quiet: bool) -> None:
    QUIET["value"] = quiet


def note(message: str) -> None:
    """An informational line on stderr (silent under ``--quiet``)."""
    if not QUIET["value"]:
        console.print(message, soft_wrap=True)  # one line, as a log reader expects


def warn(message: str) -> None:
    """A warning on stderr: something the user should know about the results, so shown even under ``--quiet``."""
    if JSON_LOGS["value"]:
        print(json.dumps({"level": "warning", "message": message}), file=sys.stderr)
    else:
        console.print(Text.assemble(("warning: ", "yellow"), message), soft_wrap=True)


@contextlib.contextmanager
def progress(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A rich progress bar (plain lines off a terminal); yields ``advance(n)``. Silent under ``--quiet``."""
    if QUIET["value"]:
        yield lambda n=1: None
        return
    if not console.is_terminal:
        with _progress_lines(description, total) as advance:
            yield advance
        return
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


@contextlib.contextmanager
def _progress_lines(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """Progress for a log file: a line every ``LINE_INTERVAL_S`` seconds and a last one when the block ends."""
    start = time.monotonic()
    state = {"done": 0, "shown": start}

    def line(now: float) -> None:
        done, elapsed = state["done"], now - start
        count = f"{done}/{total}" if total else str(done)
        eta = f", {_clock(elapsed * (total - done) / done)} left" if total and 0 < done < total else ""
        console.print(f"{description} {count} ({_clock(elapsed)}{eta})", highlight=False, soft_wrap=True)
        state["shown"] = now

    def advance(n: int = 1) -> None:
        state["done"] += n
        now = time.monotonic()
        if now - state["shown"] >= LINE_INTERVAL_S and state["done"] != total:
            line(now)

    try:
        yield advance
    finally:
        line(time.monotonic())


def _clock(seconds: float) -> str:
    """``h:mm:ss``, as rich's bars show time."""
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


@contextlib.contextmanager
def library_bars_off() -> Iterator[None]:
    """transformers' (and, once imported, datasets') tqdm bars off for a block, then as they were.

    icrm draws its own rich bars; theirs ("Loading weights", TRL's
    "Tokenizing train dataset") would interleave with them, in the CLI and in
    the Python API alike.
    """
    from transformers.utils import logging as hf_logging

    datasets = sys.modules.get("datasets")
    hf_on = hf_logging.is_progress_bar_enabled()
    ds_on = datasets is not None and not datasets.utils.are_progress_bars_disabled()
    hf_logging.disable_progress_bar()
    if ds_on:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if hf_on:
            hf_logging.enable_progress_bar()
        if ds_on:
            datasets.enable_progress_bars()


def progress_factory(description: str, total: int) -> Callable[[int], None]:
    """An ``advance`` callback for code that cannot hold a ``with`` block open.

    The bar ends when it reaches ``total``.
    """
    manager = progress(description, total)
    advance = manager.__enter__()
    done = {"n": 0}

    def step(n: int = 1) -> None:
        advance(n)
        done["n"] += n
        if done["n"] >= total:
            manager.__exit__(None, None, None)

    if total == 0:
        manager.__exit__(None, None, None)
    return step


OUTPUT_MARKER = ".icrm-output.json"


def output_kind(path: str | Path) -> str | None:
    """The command that wrote output folder ``path`` (its :data:`OUTPUT_MARKER`), or None."""
    try:
        kind = json.loads((Path(path) / OUTPUT_MARKER).read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None
    return kind if isinstance(kind, str) else None


def mark_output(directory: str | Path, kind: str) -> None:
    """Record in a finished output folder which command wrote it, so a rerun may replace it."""
    (Path(directory) / OUTPUT_MARKER).write_text(json.dumps({"kind": kind}) + "\n")


def check_output(target: str | Path, kind: str | None = None, overwrite: bool = False) -> Path:
    """Refuse (UserError) an output path that is not icrm's to replace; call it before any work.

    ``kind`` names the command of a folder output; ``None`` means a single
    file. Replaced without ``overwrite``: nothing, an empty folder, or a folder
    that the same command wrote (:func:`mark_output`). An existing file or a
    foreign folder needs ``overwrite``: icrm cannot tell a user's file from its
    own. The working directory, a folder above it and the home folder are
    refused even then (a stray ``--output .``). Returns the absolute path.
    """
    path = Path(target).absolute()
    resolved = path.resolve()
    for name, keep in (("the working directory", Path.cwd().resolve()), ("the home folder", Path.home().resolve())):
        if resolved == keep or resolved in keep.parents:
            where = "is" if resolved == keep else "holds"
            raise UserError(f"--output {target} {where} {name} ({keep}); icrm never replaces it, choose a new path")
    if not os.path.lexists(path):
        return path
    if kind is None and path.is_dir():
        raise UserError(f"--output {target} is a folder; give a file path")
    if overwrite:
        return path
    remedy = "pass --overwrite to replace it, or choose another --output"
    if kind is None:
        raise UserError(f"{target} exists; {remedy}")
    if path.is_dir() and not path.is_symlink():
        found = output_kind(path)
        if found == kind or not any(path.iterdir()):
            return path
        if found is not None:
            raise UserError(f"{target} is an icrm {found} output, not {kind}; {remedy}")
    raise UserError(f"{target} exists and is not an icrm {kind} output; {remedy}")


@contextlib.contextmanager
def staged_directory(target: str | Path, kind: str, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh directory that replaces ``target`` only if the block succeeds.

    ``target`` must pass :func:`check_output` for ``kind``; the finished
    folder is marked as ``kind``'s output.
    """
    target = check_output(target, kind, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))
    staging.chmod(_default_mode(directory=True))  # mkdtemp's 0700, else, would outlive the rename
    try:
        yield staging
        mark_output(staging, kind)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    replace_path(staging, target)


def _default_mode(directory: bool) -> int:
    """Permissions a plain ``open``/``mkdir`` would give (temp files are private)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def replace_path(source: Path, target: Path) -> None:
    """Move ``source`` onto ``target``, replacing what :func:`check_output` allowed (a link, not what it points to)."""
    if os.path.lexists(target):
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(old)
        source.rename(target)
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink()
    else:
        source.rename(target)


@contextlib.contextmanager
def staged_file(target: str | Path) -> Iterator[Path]:
    """Yield a temporary file path that replaces ``target`` only on success."""
    target = Path(target).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.partial-")
    os.close(handle)
    staging = Path(name)
    try:
        yield staging
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    staging.chmod(_default_mode(directory=False))
    os.replace(staging, target)


def write_json(path: str | Path, data: Any) -> None:
    with staged_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    with staged_file(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
