"""Output chunks on their way from a thread that reads a stream (a container's output, a Ray
log) to the console loop that prints them: a bounded queue, so the reader waits while the
console is behind and memory stays bounded whatever the output's size."""

from __future__ import annotations

import queue

QUEUED_CHUNKS = 64  # read, not printed yet: then the reader waits


class ChunkQueue:
    def __init__(self) -> None:
        self._queue: queue.Queue[bytes] = queue.Queue(QUEUED_CHUNKS)

    def put(self, chunk: bytes) -> None:
        """Queue ``chunk``; waits while the queue is full."""
        self._queue.put(chunk)

    def take(self, limit: int) -> bytes:
        """What is queued now, about ``limit`` bytes at most."""
        out = bytearray()
        while len(out) < limit:
            try:
                out += self._queue.get_nowait()
            except queue.Empty:
                break
        return bytes(out)

    def waiting(self) -> bool:
        return not self._queue.empty()
