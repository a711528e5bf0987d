"""Graceful stop on SIGINT/SIGTERM: finish the current optimiser step, save a checkpoint, then exit.

Preemptible clusters send SIGTERM (and SIGKILL a little later); Ctrl-C sends SIGINT. While
:class:`StopRequest` is active, the first of these signals only records itself; the training loop asks
:attr:`StopRequest.signum` at the end of every optimiser step (all processes agree through the step's
all-reduce), saves a checkpoint and raises :class:`TrainingInterrupted`. A second signal stops at once
with the previous handler's behaviour. Previous handlers are restored on exit.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

#: The signals that request a graceful stop.
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)


def exit_code_for(signum: int) -> int:
    """The shell's exit code for a process ended by ``signum``: 128 + signal number (130 SIGINT, 143 SIGTERM)."""
    return 128 + int(signum)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class TrainingInterrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after saving a resumable checkpoint.

    Attributes:
        signum: the signal that asked for the stop.
        step: optimiser steps done when training stopped.
        checkpoint: the checkpoint directory that was written.
        exit_code: 128 + ``signum`` (130 for SIGINT, 143 for SIGTERM), what a CLI should exit with.
    """

    def __init__(self, signum: int, step: int, checkpoint: Path) -> None:
        self.signum = int(signum)
        self.step = step
        self.checkpoint = Path(checkpoint)
        self.exit_code = exit_code_for(signum)
        super().__init__(
            f"training stopped by {signal_name(signum)} after step {step}; checkpoint saved to {checkpoint}. "
            "Continue with `--resume latest` (or resume_from='latest')."
        )


class StopRequest:
    """Context manager that turns the first SIGINT/SIGTERM into a stop request instead of an exit.

    Handlers are installed only in the main thread (Python delivers signals there); elsewhere the
    context does nothing and :attr:`signum` stays None.
    """

    def __init__(self, signals: tuple[int, ...] = STOP_SIGNALS) -> None:
        self.signals = tuple(int(s) for s in signals)
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def installed(self) -> bool:
        return bool(self._previous)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous[signum] = signal.getsignal(signum)
                signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def restore(self) -> None:
        """Put the previous handlers back (idempotent)."""
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            # second signal: give up the graceful stop and behave as if we were never installed
            self.restore()
            signal.raise_signal(signum)
            return
        self.signum = signum
        print(
            f"\n{signal_name(signum)} received: finishing the current step, then saving a checkpoint "
            "(send it again to stop at once).",
            file=sys.stderr,
            flush=True,
        )
