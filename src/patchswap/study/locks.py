"""One lock file per run directory, so that several ``patchswap compare`` processes can share a study.

``compare.lock`` holds the process id of the trainer and the host name. A lock whose process is gone
(killed, crashed) is stale and taken over; a lock written on another host (a shared folder) cannot be
checked, and says so.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

__all__ = ["LOCK_NAME", "claim_run", "hand_over", "release"]

_WRITE_GRACE_S = 10.0  # an unreadable lock younger than this is being written, not stale


LOCK_NAME = "compare.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _lock_holder(lock: Path) -> str | None:
    """Who holds ``lock``: a description, or None when it is stale (its process on this host is gone)."""
    try:
        pid_text, host = lock.read_text().split()[:2]
        pid = int(pid_text)
    except (OSError, ValueError):
        # Unreadable: stale, unless it was created a moment ago and its claimer is still writing it.
        try:
            fresh = time.time() - lock.stat().st_mtime < _WRITE_GRACE_S
        except OSError:
            return None
        return "a process that is claiming it now" if fresh else None
    if host != socket.gethostname():  # another machine sharing the folder: it cannot be checked
        return f"process {pid} on {host} (delete {lock} if that run is dead)"
    return f"process {pid}" if _pid_alive(pid) else None


def _lock_text(pid: int) -> str:
    return f"{pid} {socket.gethostname()}\n"


def hand_over(run_dir: Path, pid: int) -> None:
    """Make ``pid`` (the trainer) the holder of ``run_dir``'s lock: it stays valid while the run goes on,
    even if the process that claimed it is killed."""
    lock = run_dir / LOCK_NAME
    tmp = lock.with_name(f".{lock.name}.{os.getpid()}")
    tmp.write_text(_lock_text(pid))
    tmp.replace(lock)


def claim_run(run_dir: Path) -> str | None:
    """Take a run for this process; None on success, else who is training it now. A stale lock (its
    process ended without removing it, e.g. killed) is taken over."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / LOCK_NAME
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            holder = _lock_holder(lock)
            if holder is not None:
                return holder
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(_lock_text(os.getpid()))
        return None
    return "another process (the lock changed hands while claiming it)"


def release(run_dir: Path) -> None:
    """Remove ``run_dir``'s lock (the run finished or failed)."""
    (run_dir / LOCK_NAME).unlink(missing_ok=True)
