"""An on-disk cache of image embeddings, per (critic fingerprint, image content hash), memory-mapped.

One store serves probe training, ``score-cas``, the evaluation checks and the quickstart: an image that
one of them embedded with a critic is never encoded again by another, whatever its path, as long as its
bytes and the critic's weights and input size are unchanged.

Layout of a store folder (``ROOT/<critic fingerprint>-<image size>-<dim>/``)::

    vectors.f32   float32 rows of the embedding dimension, appended, read through a memory map
    keys.txt      one sha256 of the image file's bytes per line; line i names row i
    .lock         an flock taken while appending, so several processes can share the store

Rows are appended before their keys, each fsynced, so a crash leaves at most a row without a key; such a
tail is ignored and overwritten by the next append. Nothing is loaded into memory but the key index.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clinalign.errors import ConfigError

VECTORS_NAME = "vectors.f32"
KEYS_NAME = "keys.txt"


def file_sha256(path: str | os.PathLike[str], *, chunk_size: int = 1 << 20) -> str:
    """sha256 of a file's bytes (read in chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


class EmbeddingStore:
    """Image embeddings of one critic on disk, looked up by the image file's content hash.

    Args:
        root: folder holding stores (one subfolder per critic); created when missing.
        critic: the critic whose embeddings are stored; its ``fingerprint`` (weights hash), ``image_size``
            and ``embed_dim`` name the subfolder, so another model or preprocessing never shares rows.

    ``encoded`` counts the images this object sent through the encoder (tests and benchmarks read it).

    Example::

        store = EmbeddingStore("~/.cache/clinalign/embeddings", critic)
        emb = store.embed_files(paths)      # second call: no encoder forward pass
    """

    def __init__(self, root: str | os.PathLike[str], critic: Any) -> None:
        self.critic = critic
        dim = int(critic.embed_dim)
        fingerprint = str(getattr(critic, "fingerprint", "") or "")
        if not fingerprint:
            raise ConfigError(
                f"critic {getattr(critic, 'name', critic)!r} has no weights fingerprint, so its embeddings cannot "
                "be cached on disk safely; disable the embedding cache for it."
            )
        self.dim = dim
        self.directory = Path(root).expanduser() / f"{fingerprint}-{int(critic.image_size)}-{dim}"
        self.encoded = 0
        self._index: dict[str, int] = {}
        self._lines = 0  # complete lines of keys.txt already indexed (line i names row i)
        self._keys_read = 0  # bytes of keys.txt already indexed
        self._map: np.memmap | None = None
        self._map_rows = 0

    # ------------------------------------------------------------------ reading
    def _refresh(self) -> None:
        """Index keys another process (or this one) appended since the last look."""
        keys = self.directory / KEYS_NAME
        if not keys.is_file():
            return
        with open(keys, "rb") as handle:
            handle.seek(self._keys_read)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]  # a torn last line is not a key yet
        for line in complete.decode("ascii", errors="replace").splitlines():
            self._index.setdefault(line.strip(), self._lines)
            self._lines += 1
        self._keys_read += len(complete)

    def _rows_on_disk(self) -> int:
        path = self.directory / VECTORS_NAME
        return path.stat().st_size // (4 * self.dim) if path.is_file() else 0

    def __len__(self) -> int:
        self._refresh()
        return min(self._lines, self._rows_on_disk())

    def lookup(self, keys: Sequence[str]) -> np.ndarray:
        """Row of each key, -1 where the store does not hold it (int64 [N])."""
        self._refresh()
        usable = min(self._lines, self._rows_on_disk())
        rows = [self._index.get(k, -1) for k in keys]
        return np.asarray([r if r < usable else -1 for r in rows], dtype=np.int64)

    def rows(self, rows: np.ndarray) -> torch.Tensor:
        """Embeddings [N,D] (float32, CPU) of stored rows, read through a memory map."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0):
            raise KeyError("asked for an embedding the store does not hold")
        needed = int(rows.max()) + 1 if rows.size else 0
        if self._map is None or needed > self._map_rows:
            total = self._rows_on_disk()
            self._map = (
                np.memmap(self.directory / VECTORS_NAME, dtype=np.float32, mode="r", shape=(total, self.dim))
                if total
                else None
            )
            self._map_rows = total
        if not rows.size:
            return torch.zeros(0, self.dim)
        if self._map is None or needed > self._map_rows:
            raise KeyError("asked for an embedding the store does not hold")
        return torch.from_numpy(np.array(self._map[rows], dtype=np.float32))

    def get(self, keys: Sequence[str]) -> torch.Tensor:
        """Embeddings [N,D] of keys the store holds (KeyError for one it does not)."""
        return self.rows(self.lookup(keys))

    # ------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX)
            except ImportError:  # no flock (Windows): one writer is the caller's job
                pass
            yield
        finally:
            os.close(fd)  # drops the flock

    def add(self, keys: Sequence[str], embeddings: torch.Tensor) -> None:
        """Append embeddings [N,D] under ``keys``; keys already stored are skipped."""
        if len(keys) != int(embeddings.shape[0]) or (embeddings.dim() == 2 and embeddings.shape[1] != self.dim):
            raise ConfigError(f"{len(keys)} keys for embeddings of shape {list(embeddings.shape)} (dim {self.dim}).")
        values = embeddings.detach().float().cpu().numpy()
        with self._locked():
            self._refresh()
            # a row without its key (a crash between the two appends) is overwritten: cut it off first
            valid = min(self._lines, self._rows_on_disk())
            fresh: dict[str, int] = {}
            for i, key in enumerate(keys):
                if key not in self._index and key not in fresh:
                    fresh[key] = i
            if not fresh:
                return
            block = np.ascontiguousarray(values[list(fresh.values())], dtype=np.float32)
            with open(self.directory / VECTORS_NAME, "ab") as handle:
                handle.truncate(valid * 4 * self.dim)
                handle.seek(valid * 4 * self.dim)
                handle.write(block.tobytes())
                handle.flush()
                os.fsync(handle.fileno())
            keys_path = self.directory / KEYS_NAME
            with open(keys_path, "r+b" if keys_path.is_file() else "wb") as handle:
                handle.truncate(self._keys_read)  # drop a torn last line (it names no row)
                handle.seek(self._keys_read)
                handle.write("".join(f"{key}\n" for key in fresh).encode("ascii"))
                handle.flush()
                os.fsync(handle.fileno())
            self._refresh()

    # ------------------------------------------------------------------ embedding
    def embed_files(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        batch_size: int = 32,
        progress: bool = False,
        desc: str = "embedding images",
        keys: Sequence[str] | None = None,
    ) -> torch.Tensor:
        """Embeddings [N,D] of image files: stored rows are read back, the others encoded and stored.

        ``keys`` are the files' content hashes when the caller already has them (:func:`file_sha256`).
        """
        from clinalign.critics.embed import embed_image_files

        keys = list(keys) if keys is not None else [file_sha256(p) for p in paths]
        found = self.lookup(keys)
        missing: dict[str, str | os.PathLike[str]] = {}
        for key, path, row in zip(keys, paths, found, strict=True):
            if row < 0 and key not in missing:
                missing[key] = path
        if missing:
            new = embed_image_files(
                self.critic, list(missing.values()), batch_size=batch_size, progress=progress, desc=desc
            )
            self.encoded += len(missing)
            self.add(list(missing), new)
        return self.get(keys)


__all__ = ["EmbeddingStore", "file_sha256"]
