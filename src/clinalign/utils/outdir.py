"""Output folders: one writer at a time, and no fresh run silently mixed into an earlier one.

Every command that writes an output folder calls :func:`claim_output_dir` before it loads a model or
sends a request:

- the path must be a folder (or not exist yet); an existing *file* is an error;
- an exclusive lock is taken on ``OUT/.clinalign.lock`` (``fcntl.flock`` on a descriptor held for the
  whole run, so the kernel releases it when the process ends however it ends, SIGKILL included). The
  file records the holder (pid, host, command, start time); a second run exits 2 naming it. A lock file
  left by a process that is gone is taken over with a message;
- a folder that already holds files is refused unless the run is a resume of the same command
  (``resume=True``) or ``overwrite=True``, which empties the folder first (after the lock is held).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from clinalign.errors import ClinAlignError, ConfigError

LOCK_NAME = ".clinalign.lock"


class OutputLockedError(ClinAlignError):
    """Another run is writing to the same output folder."""


class OutputInUseError(ClinAlignError):
    """The output folder holds an earlier run, and this run is neither a resume nor an overwrite."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or held) an output folder's lock."""

    pid: int | None
    host: str | None
    command: str | None
    started: str | None

    def describe(self) -> str:
        what = f"`clinalign {self.command}`" if self.command else "a clinalign run"
        return f"{what} (pid {self.pid} on host {self.host}, started {self.started})"

    @classmethod
    def from_text(cls, text: str) -> LockHolder:
        try:
            data: Any = json.loads(text)
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        pid = data.get("pid")
        return cls(
            pid=pid if isinstance(pid, int) else None,
            host=data.get("host"),
            command=data.get("command"),
            started=data.get("started"),
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class OutputLock:
    """An exclusive, process-lifetime lock on one output folder (see the module docstring).

    Use as a context manager, or call :meth:`acquire` and :meth:`release`.
    """

    def __init__(self, directory: str | os.PathLike[str], *, command: str) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self.command = command
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> OutputLock:
        """Take the lock or raise :class:`OutputLockedError` naming the holder."""
        if self._fd is not None:
            return self
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = self._open_locked()
        except OSError as exc:
            raise ConfigError(
                f"{self.directory}: cannot create the output folder or its lock file ({exc.strerror or exc}). "
                "Check the path and its permissions."
            ) from None
        previous = _read_fd(fd).strip()
        if previous:
            holder = LockHolder.from_text(previous)
            here = socket.gethostname()
            if holder.host not in (None, here):
                state = "no longer holds it"
            elif holder.pid is not None and holder.pid != os.getpid() and _pid_alive(holder.pid):
                state = "does not hold it (its pid is now another process)"
            else:
                state = "is no longer running"
            print(
                f"Note: {self.directory}: taking over a stale lock left by {holder.describe()}, which {state}.",
                file=sys.stderr,
            )
        record = {
            "command": self.command,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(record, sort_keys=True) + "\n").encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def _locked_message(self, holder: LockHolder) -> str:
        return (
            f"{self.directory} is in use by {holder.describe()}. Wait for it to finish, stop it, or choose another "
            "output folder; two runs writing one folder would mix or overwrite each other's files."
        )

    def _open_locked(self) -> int:
        """A descriptor of the lock file holding an exclusive flock (or, without fcntl, created exclusively)."""
        try:
            import fcntl
        except ImportError:  # no flock (Windows): the file's existence is the lock
            try:
                return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = LockHolder.from_text(self.path.read_text(encoding="utf-8", errors="replace"))
                raise OutputLockedError(
                    self._locked_message(holder) + f" If that run is no longer running, delete {self.path}."
                ) from None
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = LockHolder.from_text(_read_fd(fd))
                os.close(fd)
                raise OutputLockedError(self._locked_message(holder)) from None
            # the releasing run unlinks the file: if we locked an unlinked inode, start over on the new file
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                return fd
            os.close(fd)

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_fd(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


def check_output_path(path: str | os.PathLike[str], *, option: str = "--out") -> Path:
    """Raise :class:`ConfigError` when ``path`` exists and is not a folder."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ConfigError(
            f"{option} {out} is an existing file, not a folder. Give a folder path (it is created if missing)."
        )
    return out


def existing_entries(directory: str | os.PathLike[str]) -> list[str]:
    """Names in ``directory`` other than the lock file and leftover atomic-write temporaries (sorted)."""
    folder = Path(directory)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name != LOCK_NAME and not _is_temporary(p.name))


def _is_temporary(name: str) -> bool:
    # what an interrupted atomic write leaves behind (".<name>.<random>.tmp"); never a result
    return name.startswith(".") and name.endswith(".tmp")


def _check_safe_to_clear(directory: Path) -> None:
    """--overwrite empties a run's folder; never the working directory, a parent of it, or the home folder."""
    target = directory.resolve()
    cwd = Path.cwd().resolve()
    if target == Path.home().resolve() or target == cwd or target in cwd.parents:
        raise ConfigError(
            f"--overwrite would empty {target}, which is the current folder, one of its parents or the home "
            "folder. Give the run its own output folder."
        )


def clear_output_dir(directory: str | os.PathLike[str], *, keep: Collection[str] = ()) -> None:
    """Delete everything in ``directory`` except the lock file and the entries named in ``keep``."""
    for entry in Path(directory).iterdir():
        if entry.name == LOCK_NAME or entry.name in keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def claim_output_dir(
    directory: str | os.PathLike[str],
    *,
    command: str,
    overwrite: bool = False,
    resume: bool = False,
    option: str = "--out",
    resume_hint: str | None = None,
    inputs: Collection[str] = (),
) -> OutputLock:
    """Check ``directory``, lock it for this run and apply the used-folder rule; returns the held lock.

    Args:
        command: the command name recorded in the lock (shown to a second run).
        overwrite: empty the folder first (after the lock is held).
        resume: this run continues what the folder holds (the caller decided it is its own earlier run).
        option: the option that named the folder, for messages.
        resume_hint: how to resume, appended to the refusal (e.g. "pass --resume latest").
        inputs: entries other commands put in the folder for this one to read (e.g. ``evaluation`` results
            that ``score-cas`` adds to its report): they neither make the folder used nor are emptied.
    """
    out = check_output_path(directory, option=option)
    lock = OutputLock(out, command=command).acquire()
    try:
        entries = [name for name in existing_entries(out) if name not in inputs]
        if entries and overwrite:
            _check_safe_to_clear(out)
            clear_output_dir(out, keep=inputs)
            print(f"--overwrite: emptied {out} ({len(entries)} entries).", file=sys.stderr)
        elif entries and not resume:
            shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
            hint = f" {resume_hint}," if resume_hint else ""
            raise OutputInUseError(
                f"{option} {out} already holds files ({shown}) that this run would mix with or overwrite. Choose "
                f"a new folder,{hint} or pass --overwrite to empty it first."
            )
    except BaseException:
        lock.release()
        raise
    return lock


def changed_settings(
    saved: str | os.PathLike[str], settings: Mapping[str, Any], *, may_change: Collection[str] = ()
) -> list[str]:
    """What differs between the settings a folder's earlier run saved (a JSON file) and ``settings``.

    Returns one ``"key: old -> new"`` per differing key, sorted, ignoring ``may_change``; an empty list when the
    file does not exist yet. Commands that resume into a folder refuse to when this is not empty, because they would
    reuse (or add to) what was made with other settings.
    """
    from clinalign.utils.io import read_json

    path = Path(saved)
    if not path.is_file():
        return []
    before = read_json(path)
    return [
        f"{key}: {before.get(key)!r} -> {settings.get(key)!r}"
        for key in sorted(set(before) | set(settings))
        if key not in may_change and before.get(key) != settings.get(key)
    ]


__all__ = [
    "LOCK_NAME",
    "LockHolder",
    "OutputInUseError",
    "OutputLock",
    "OutputLockedError",
    "changed_settings",
    "check_output_path",
    "claim_output_dir",
    "clear_output_dir",
    "existing_entries",
]
