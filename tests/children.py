"""Spawned child processes for tests that train in a process of their own.

A child that has trained holds a DeepSpeed engine and a gloo process group until it exits. The
interpreter's teardown then runs C++ destructors, which can abort the process ("terminate called
without an active exception", SIGABRT; seen once in CI under load) and hide the exit status a
test asserts. `spawn` runs the target, then leaves with `os._exit`: 0 after a return, the code of
a SystemExit, 1 after any other exception (its traceback printed first).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import traceback


def _exit_plainly(target, args: tuple) -> None:
    code = 0
    try:
        target(*args)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def spawn(target, *args, timeout: float = 300) -> int:
    """Run `target(*args)` in a spawned process; its exit code (None if still running after `timeout`)."""
    proc = mp.get_context("spawn").Process(target=_exit_plainly, args=(target, args))
    proc.start()
    proc.join(timeout=timeout)
    return proc.exitcode
