"""Data-parallel runs: each process scores a share of the batches, every process gets all rows.

Started under ``torchrun`` or ``accelerate launch`` (both set ``RANK`` / ``WORLD_SIZE`` /
``MASTER_ADDR`` / ``MASTER_PORT``), every process runs the same program. The loops that cost a
forward pass per batch of items (letter and likelihood scoring of BBQ, activation extraction in
memory and streamed to disk, multiple-choice scoring, text log-probs, generation) cut their items
into length-sorted batches exactly as one process would, each process runs every ``size``-th
batch, and the rows are merged back in item order. So every process holds what a one-process run
computes, bit for bit: the same batches go through the same kernels, only on different processes.

The merge goes through a gloo process group (CPU tensors; a second, gloo group is made when the
launcher set up NCCL). When one process fails, ``torchrun`` stops the others; work already written
to disk (the streamed store's shards) is kept, and the rerun resumes it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch

from fairlens.errors import ConfigError

T = TypeVar("T")

_LOCAL: ContextVar[bool] = ContextVar("fairlens_local", default=False)
_COUNTERS: ContextVar[tuple[Counter, ...]] = ContextVar("fairlens_counters", default=())
_GLOO: list[Any] = []  # the gloo group used for merges (None: the default group is gloo)


@runtime_checkable
class Counter(Protocol):
    """Counts a shared loop adds to on each process (e.g. a steering gate's firing counts): summed
    over the processes when the loop ends, so every process reports the whole run's counts."""

    def counts(self) -> list[int]: ...

    def add_counts(self, extra: list[int]) -> None: ...


@dataclass(frozen=True)
class World:
    """This process's place among the processes of a run (``rank`` of ``size``)."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """The process that writes the run's files and shows progress bars."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """Whether the batches of a loop are shared among several processes now."""
        return self.size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} is not an integer.", "Start fairlens with torchrun/accelerate launch."
        ) from None


def launched() -> World:
    """The process layout the launcher set in the environment (no process group is made)."""
    size, rank = _env_int("WORLD_SIZE", 1), _env_int("RANK", 0)
    if size < 1 or not 0 <= rank < size:
        raise ConfigError(
            f"RANK={rank} does not fit WORLD_SIZE={size}.",
            "Start fairlens with torchrun / accelerate launch, or unset RANK and WORLD_SIZE.",
        )
    return World(rank, size)


def world() -> World:
    """This process's :class:`World`; one process (``World(0, 1)``) inside :func:`local`."""
    w = launched()
    if _LOCAL.get() or w.size == 1:
        return World(0, 1)
    _group()
    return w


@contextmanager
def local() -> Iterator[None]:
    """Run the loops inside the block on this process's items only (no sharing, no merge): for a
    caller that already shares out its own work, e.g. the chunks of a streamed extraction."""
    token = _LOCAL.set(True)
    try:
        yield
    finally:
        _LOCAL.reset(token)


def _group() -> Any:
    import torch.distributed as dist

    if not dist.is_available():
        raise ConfigError(
            "this torch build has no torch.distributed.",
            "run with one process (no --num-processes, torchrun or accelerate launch).",
        )
    if not dist.is_initialized():
        w = launched()
        minutes = _env_int("FAIRLENS_DIST_TIMEOUT_MIN", 60)
        dist.init_process_group(
            "gloo", rank=w.rank, world_size=w.size, timeout=timedelta(minutes=minutes)
        )
    if not _GLOO:
        _GLOO.append(None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo"))
    return _GLOO[0]


def my_share(batches: Sequence[T]) -> list[T]:
    """The batches this process runs: every ``size``-th, from its rank (longest first, so the
    long batches of a length-sorted list are spread over the processes)."""
    w = world()
    return list(batches[w.rank :: w.size])


@contextmanager
def counting(counter: Counter) -> Iterator[None]:
    """Register ``counter`` for the block: each :func:`shared` loop inside it sums what the
    processes added to it (a steerer's ``apply`` registers its gate statistics)."""
    token = _COUNTERS.set((*_COUNTERS.get(), counter))
    try:
        yield
    finally:
        _COUNTERS.reset(token)


@contextmanager
def shared(batches: Sequence[T]) -> Iterator[list[T]]:
    """``with shared(batches) as mine:`` run ``mine`` (:func:`my_share`); on leaving, the counts
    of the registered :class:`Counter` objects gained inside are summed over the processes.
    Merge the loop's outputs with :func:`merge_rows` / :func:`merge_objects` afterwards."""
    counters = _COUNTERS.get() if world().active else ()  # no host sync with one process
    before = [c.counts() for c in counters]
    yield my_share(batches)
    if not counters:
        return
    gained = [
        [a - b for a, b in zip(c.counts(), old, strict=True)]
        for c, old in zip(counters, before, strict=True)
    ]
    everyone = agree(gained)
    me = world().rank
    for k, counter in enumerate(counters):
        others = [everyone[r][k] for r in range(len(everyone)) if r != me]
        counter.add_counts([sum(col) for col in zip(*others, strict=True)])


def show(progress: bool) -> bool:
    """Whether this process draws progress bars (the main process only)."""
    return progress and launched().is_main


def merge_rows(out: torch.Tensor, batches: Sequence[Sequence[int]], dim: int = 0) -> torch.Tensor:
    """``out`` with the rows every process computed: process ``r`` filled ``out``'s rows of
    ``my_share(batches)`` along ``dim``; afterwards every process holds all of them (in place)."""
    w = world()
    if not w.active:
        return out
    import torch.distributed as dist

    rows = [r for b in my_share(batches) for r in b]
    index = torch.as_tensor(rows, dtype=torch.long)
    gathered: list[Any] = [None] * w.size
    dist.all_gather_object(gathered, (index, out.index_select(dim, index)), group=_group())
    for idx, values in gathered:
        out.index_copy_(dim, idx, values.to(out.dtype))
    return out


def merge_objects(out: list[Any], batches: Sequence[Sequence[int]]) -> list[Any]:
    """:func:`merge_rows` for a list of Python objects (e.g. generated texts), in place."""
    w = world()
    if not w.active:
        return out
    import torch.distributed as dist

    mine = [(r, out[r]) for b in my_share(batches) for r in b]
    gathered: list[Any] = [None] * w.size
    dist.all_gather_object(gathered, mine, group=_group())
    for part in gathered:
        for r, value in part:
            out[r] = value
    return out


def barrier() -> None:
    """Wait for every process (nothing with one process)."""
    w = world()
    if w.active:
        import torch.distributed as dist

        dist.barrier(group=_group())


def agree(value: Any) -> list[Any]:
    """Every process's ``value``, in rank order (one-element list with one process)."""
    w = world()
    if not w.active:
        return [value]
    import torch.distributed as dist

    gathered: list[Any] = [None] * w.size
    dist.all_gather_object(gathered, value, group=_group())
    return gathered


def decided(value: T) -> T:
    """The main process's ``value`` on every process: for a choice that depends on files (does the
    run folder hold this stage?), so that every process takes the same branch at the same time."""
    w = world()
    return value if not w.active else agree(value if w.is_main else None)[0]


def on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` (a write to the run folder) on the main process only; every process waits for
    it and gets its result, and an error it raises is raised on every process."""
    w = world()
    if not w.active:
        return fn()
    result: Any = None
    error: BaseException | None = None
    if w.is_main:
        try:
            result = fn()
        except Exception as exc:  # re-raised below, after the others learn of it
            error = exc
    outcome = agree((result, None if error is None else f"{type(error).__name__}: {error}"))[0]
    if error is not None:
        raise error
    if outcome[1] is not None:
        raise ConfigError(
            f"the main process failed: {outcome[1]}",
            "resolve the main process's error quoted here, then rerun.",
        )
    return outcome[0]


def from_rank(value: T, rank: int) -> T:
    """Process ``rank``'s ``value`` on every process (the others pass anything, e.g. ``None``)."""
    w = world()
    if not w.active:
        return value
    return agree(value if w.rank == rank else None)[rank]
