"""The processes of an ``accelerate launch`` / ``torchrun`` job, seen by generation and scoring.

Commands other than training do not need an ``Accelerator``: they shard work by rank and exchange a
few Python objects. :func:`process_group` joins the launched job (accelerate's ``PartialState`` sets
up the process group, gloo on CPU) or, when the process was not launched that way, returns a
single-process group whose collectives are no-ops, so library code has one path for 1 and N processes.

Collectives are called on every rank, in the same order: a rank that skips one hangs the others.
Work that can fail on the main process only (claiming the output folder, reading what a previous run
left) is therefore run through :meth:`Ranks.run_on_main`, which hands the main process's outcome,
result or error, to every rank instead of leaving them waiting.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from clinalign.errors import ClinAlignError

T = TypeVar("T")


class MainProcessError(ClinAlignError):
    """Raised on the other ranks when the main process failed a step they were waiting for."""


def launched_world_size() -> int:
    """Number of processes of the launched job (``WORLD_SIZE``), 1 when not launched by a launcher."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def launched_rank() -> int:
    """This process's global rank in a launched job (``RANK``), 0 when not launched by a launcher."""
    try:
        return max(0, int(os.environ.get("RANK", "0")))
    except ValueError:
        return 0


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job: ``process_index`` of ``num_processes`` (rank 0 is the main process)."""

    process_index: int = 0
    num_processes: int = 1
    device: str | None = None

    @property
    def is_main(self) -> bool:
        return self.process_index == 0

    @property
    def distributed(self) -> bool:
        return self.num_processes > 1

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def broadcast(self, obj: T | None) -> T:
        """The main process's ``obj`` on every rank (picklable objects)."""
        if not self.distributed:
            return obj  # type: ignore[return-value]
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]  # type: ignore[return-value]

    def gather(self, obj: T) -> list[T]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.num_processes
        dist.all_gather_object(out, obj)
        return out

    def run_on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the main process and return its result on every rank.

        If ``fn`` raises a :class:`ClinAlignError` on the main process, the main process re-raises it and
        every other rank raises :class:`MainProcessError` with the same message (and exit code), so no rank
        is left waiting on a collective the main process will never reach.
        """
        outcome: tuple[str, Any] | None = None
        if self.is_main:
            try:
                outcome = ("ok", fn())
            except ClinAlignError as exc:
                if not self.distributed:
                    raise
                self.broadcast(("error", (str(exc), exc.exit_code)))
                raise
        status, value = self.broadcast(outcome)
        if status == "error":
            message, code = value
            error = MainProcessError(f"the main process stopped: {message}")
            error.exit_code = code
            raise error
        return value


def process_group(*, cpu: bool | None = None) -> Ranks:
    """The ranks of the launched job, or a single process when the job was not launched with several.

    Args:
        cpu: force CPU (gloo); by default CPU when ``ACCELERATE_USE_CPU`` is set or no GPU is present.
    """
    if launched_world_size() <= 1:
        return Ranks()
    import torch
    from accelerate import PartialState

    if cpu is None:
        # accelerate reads ACCELERATE_USE_CPU in Accelerator only; PartialState needs it passed
        cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    return Ranks(process_index=state.process_index, num_processes=state.num_processes, device=str(state.device))


__all__ = ["MainProcessError", "Ranks", "launched_rank", "launched_world_size", "process_group"]
