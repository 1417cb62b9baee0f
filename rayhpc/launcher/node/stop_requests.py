"""Whether the head is asked to stop, and by whom: the stop file (a job script's walltime
warning, a cancel, `rayhpc down`), its own walltime timer where no job script has one (the local
site: --stop-at), or its run directory removed. Looked at once a second at most, by the head
alone (one stat or two per second for the whole cluster)."""

from __future__ import annotations

import time

from rayhpc.launcher.contract import RunPaths, run_dir_problem

STOP_FILE_EVERY_S = 1.0  # the head looks at the stop file at most this often
RUN_DIR_GONE_LOOKS = 3  # spec.json missing this many looks in a row: the run directory is gone


class StopRequests:
    def __init__(self, paths: RunPaths, walltime_s: int, stop_grace: int):
        self.paths = paths
        self.walltime_s, self.stop_grace = walltime_s, stop_grace
        self.stop_at = 0.0  # epoch seconds of the walltime's end less stop_grace (0: none)
        self.seen = False
        self._checked = 0.0
        self._spec_missing = 0

    def requested(self, say) -> bool:
        if self.seen:
            return True
        now = time.monotonic()
        if now - self._checked >= STOP_FILE_EVERY_S:
            self._checked = now
            if self.stop_at and time.time() >= self.stop_at:
                self._walltime_over(say)
            self.seen |= self.paths.stop.exists()
            # A few looks in a row: a shared file system's hiccup is not a removal.
            self._spec_missing = 0 if self.paths.spec.exists() else self._spec_missing + 1
            self.seen |= self._spec_missing >= RUN_DIR_GONE_LOOKS
        return self.seen

    def _walltime_over(self, say) -> None:
        """The stop file, as a job script's walltime warning writes it."""
        self.stop_at = 0.0
        try:
            self.paths.request_stop(f"walltime: {self.walltime_s} s less stop_grace "
                                    f"{self.stop_grace} s")
        except OSError as exc:
            say(f"cannot write the stop file: {run_dir_problem(exc)}")
            self.seen = True

    def who(self) -> str:
        """Who asked, in words (a signal aside: the head says that itself)."""
        if self._spec_missing >= RUN_DIR_GONE_LOOKS:
            return f"its run directory {self.paths.dir} was removed"
        return self.paths.read_stop_request() or "the stop file"
