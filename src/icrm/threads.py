"""How many CPU threads torch may use in one icrm process.

torch starts one intra-op thread per core, and its OpenMP threads spin while
they wait for each other. As soon as another busy process shares the cores,
the threads oversubscribe them and a run slows down several-fold.
icrm's tiny and small models gain little from many threads, so the default is
the number of cores that are actually free, from the load average, capped.

Order of precedence: ``icrm --threads N``, then ``$ICRM_THREADS``, then
``$OMP_NUM_THREADS``, then the free cores.

Every command applies it. The Python API (``ICRMTrainer``,
``RewardModel.from_pretrained``) applies the same default once per process,
unless the program has chosen a count itself with ``torch.set_num_threads``:
a count that differs from the one torch started with is left alone.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping

from .errors import UserError

ENV = "ICRM_THREADS"
MAX_DEFAULT = 4  # tiny/small models: more threads than this buy (almost) nothing
_CHOSEN = {"value": False}  # a thread count has been applied (or left as the program set it) in this process


def available_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def current_load() -> float:
    """One-minute load average (0 where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def free_cores(cores: int, load: float, cap: int = MAX_DEFAULT) -> int:
    """``cores`` minus the rounded load, at least 1 and at most ``cap``."""
    return max(1, min(cap, cores - math.floor(load + 0.5)))


def _parse(value: str, name: str) -> int:
    """A thread count from an environment variable; OpenMP's nested form ``4,2`` counts its first level."""
    try:
        count = int(value.split(",")[0])
    except ValueError:
        raise UserError(f"${name} must be a positive integer, got {value!r}") from None
    if count < 1:
        raise UserError(f"${name} must be a positive integer, got {value!r}")
    return count


def default_threads(
    environ: Mapping[str, str] | None = None, cores: int | None = None, load: float | None = None
) -> int:
    """The thread count icrm uses when ``--threads`` is not given (see the module docstring)."""
    environ = os.environ if environ is None else environ
    for name in (ENV, "OMP_NUM_THREADS"):
        if environ.get(name, "").strip():
            return _parse(environ[name].strip(), name)
    return free_cores(available_cores() if cores is None else cores, current_load() if load is None else load)


def set_threads(count: int) -> None:
    """Use ``count`` intra-op threads in this process.

    Before torch is imported the OpenMP variable is enough (and importing
    torch just for this would slow down commands that never use it).
    """
    if count < 1:
        raise UserError(f"--threads must be at least 1, got {count}")
    os.environ["OMP_NUM_THREADS"] = str(count)
    _CHOSEN["value"] = True
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(count)


def apply_default_threads() -> None:
    """The Python API's :func:`default_threads`: once per process, and never over the program's own choice.

    torch starts with ``$MKL_NUM_THREADS`` or ``$OMP_NUM_THREADS`` threads,
    else with its inter-op pool's size, which it sets from the same core count
    and which ``torch.set_num_threads`` does not change. A different count
    means the program called ``torch.set_num_threads``, which wins. Only a
    program that set exactly torch's own count cannot be told apart; setting
    ``$ICRM_THREADS`` says the same thing to icrm.
    """
    if _CHOSEN["value"]:
        return
    import torch

    if torch.get_num_threads() == _torch_initial_threads(torch):
        set_threads(default_threads())
    _CHOSEN["value"] = True


def _torch_initial_threads(torch) -> int:
    """The intra-op thread count torch starts with in this environment."""
    for name in ("MKL_NUM_THREADS", "OMP_NUM_THREADS"):  # torch reads both; MKL's wins
        value = os.environ.get(name, "").split(",")[0].strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return torch.get_num_interop_threads()
