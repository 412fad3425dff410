"""Peak resident memory of this process, sampled in a background thread (shared by the
benchmarks)."""

from __future__ import annotations

import os
import threading
import time


class PeakMemory:
    """Samples this process's resident set size in a background thread."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval, self.peak, self._running = interval, 0, False

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _loop(self) -> None:
        while self._running:
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        self.start = self.peak = self.rss()
        self._running = True
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._running = False
        self._thread.join()
        self.peak = max(self.peak, self.rss())
