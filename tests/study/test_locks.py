"""Run locks: held while a trainer lives, taken over when it is gone, never silently shared."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from patchswap.study.locks import LOCK_NAME, claim_run, hand_over, release


def test_a_lock_follows_the_trainer_and_is_stale_once_it_exits(tmp_path):
    run_dir = tmp_path / "run"
    assert claim_run(run_dir) is None
    assert claim_run(run_dir) == f"process {os.getpid()}", "a second claim is refused"
    trainer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        hand_over(run_dir, trainer.pid)
        assert (run_dir / LOCK_NAME).read_text() == f"{trainer.pid} {socket.gethostname()}\n"
        assert claim_run(run_dir) == f"process {trainer.pid}"
    finally:
        trainer.kill()
        trainer.wait()
    assert claim_run(run_dir) is None, "the trainer is gone: its lock is taken over"
    release(run_dir)
    assert not (run_dir / LOCK_NAME).exists()
    release(run_dir)  # releasing twice is harmless


def test_an_unreadable_lock_is_held_only_while_it_is_being_written(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    lock = run_dir / LOCK_NAME
    lock.write_text("")  # a claimer between creating the file and writing its pid
    assert claim_run(run_dir) == "a process that is claiming it now"
    os.utime(lock, (0, 0))  # the same empty file, long ago: its writer died
    assert claim_run(run_dir) is None
    lock.write_text("77 some-other-host\n")
    assert "on some-other-host" in claim_run(run_dir)
