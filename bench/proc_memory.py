"""Peak memory of processes, for benchmarks: each process's own ``VmHWM``, read from /proc.

``getrusage`` cannot tell a build's pool workers (or its Prefect server) apart from their parent
(see ``ProcSampler``), so ``bench/build_scale.py`` samples every descendant's peak RSS by kind.

Only the standard library at the top: build_scale.py imports this module, and the build's
spawned workers import that script again.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

MB = 1e6


def hwm_kib(pid: int | str = "self") -> int | None:
    """Peak resident set (``VmHWM``) of a process, KiB; ``None`` when it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class ProcSampler:
    """Polls the peak RSS (``VmHWM``) of every descendant process, by kind, until stopped.

    Why not ``getrusage(RUSAGE_CHILDREN)``: on Linux a child started by fork + exec (spawned
    workers, the Prefect server) starts its ``ru_maxrss`` at its parent's RSS at the fork, so a
    worker of a 700 MB build process reads 700 MB however little it uses; and through Prefect
    the server is a child too. ``VmHWM`` is per address space and starts afresh at exec.
    """

    def __init__(self, interval: float = 0.1):
        self.interval = interval
        self.peaks: dict[int, tuple[str, int]] = {}  # pid -> (kind, peak KiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> None:
        if Path("/proc/self/status").exists():
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
            self._sample()

    def peak_mb(self, kind: str) -> float | None:
        values = [kib for k, kib in self.peaks.values() if k == kind]
        return max(values) * 1024 / MB if values else None

    def count(self, kind: str) -> int:
        return sum(1 for k, _ in self.peaks.values() if k == kind)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        parent_of: dict[int, int] = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    stat = Path(f"/proc/{entry.name}/stat").read_text()
                    parent_of[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
        me = os.getpid()
        for pid in parent_of:
            p, hops = parent_of[pid], 0
            while p != me and p in parent_of and hops < 64:
                p, hops = parent_of[p], hops + 1
            if p != me:
                continue
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            hwm = hwm_kib(pid)
            if hwm is None:
                continue
            kind = ("server" if "prefect_server" in cmd else
                    "tracker" if "resource_tracker" in cmd else
                    "worker" if "spawn_main" in cmd else "other")
            self.peaks[pid] = (kind, max(hwm, self.peaks.get(pid, (kind, 0))[1]))
