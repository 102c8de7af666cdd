"""An LRU cache of estimated raw depth maps.

Estimating depth costs seconds on a CPU, and the same image is estimated again and again: the
preview button, then Generate, then a second batch with another prompt. Entries are keyed by the
image's pixels and by everything that changes the estimate (estimator, weights, resolution), and
the cache is bounded in bytes. The WebUI serves preview clicks and jobs from different threads,
so every operation is locked, and two threads asking for the same missing entry estimate it once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from PIL import Image

from ..images import pixel_digest

DEFAULT_MAX_BYTES = 256 * 2**20
"""256 MiB: about 64 maps of 1024 x 1024 (4 MiB each in float32)."""


class DepthKey(NamedTuple):
    """What an estimate depends on: the pixels, the estimator, its weights and its resolution."""

    image_digest: str
    image_size: tuple[int, int]
    image_mode: str
    estimator: str
    weights_id: str
    net_size: int


def depth_key(image: Image.Image, estimator: str, weights_id: str, net_size: int) -> DepthKey:
    """The cache key of `image` estimated by `estimator` with weights `weights_id` at `net_size`."""
    return DepthKey(pixel_digest(image), image.size, image.mode, estimator, str(weights_id), int(net_size))


class DepthCache:
    """Thread-safe LRU of read-only float32 arrays, bounded by their total size in bytes."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self._entries: OrderedDict[DepthKey, np.ndarray] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()
        self._pending: dict[DepthKey, threading.Lock] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored arrays."""
        with self._lock:
            return self._nbytes

    def get(self, key: DepthKey) -> np.ndarray | None:
        """The stored array (read-only) and mark it recently used, or None; counts a hit or a miss."""
        with self._lock:
            entry = self._touch(key)
            self._count(entry)
            return entry

    def put(self, key: DepthKey, depth: np.ndarray) -> np.ndarray:
        """Store a read-only float32 copy of `depth` and return it; evict least recently used entries.

        An array larger than the whole cache is returned (read-only) but not stored.
        """
        entry = np.array(depth, dtype=np.float32, copy=True)
        entry.setflags(write=False)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._nbytes -= old.nbytes
            if entry.nbytes > self.max_bytes:
                return entry
            self._entries[key] = entry
            self._nbytes += entry.nbytes
            while self._nbytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._nbytes -= evicted.nbytes
                self.evictions += 1
        return entry

    def get_or_compute(self, key: DepthKey, compute: Callable[[], np.ndarray]) -> tuple[np.ndarray, bool]:
        """(array, was_hit): the stored entry, or `compute()` stored.

        Concurrent misses of one key compute it once: the others wait and then hit.
        """
        with self._lock:
            entry = self._touch(key)
            if entry is not None:
                self._count(entry)
                return entry, True
            pending = self._pending.setdefault(key, threading.Lock())
        with pending:
            with self._lock:  # another thread may have stored it while we waited
                entry = self._touch(key)
                self._count(entry)
            if entry is not None:
                return entry, True
            try:
                return self.put(key, compute()), False
            finally:
                with self._lock:
                    self._pending.pop(key, None)

    def clear(self) -> None:
        """Drop every entry (the counters stay, they describe the cache's whole life)."""
        with self._lock:
            self._entries.clear()
            self._nbytes = 0

    def _touch(self, key: DepthKey) -> np.ndarray | None:
        """The entry, marked most recently used; call with the lock held."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def _count(self, entry: np.ndarray | None) -> None:
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
