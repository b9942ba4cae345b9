"""One way to run a server's command-line tool from a fault test: bounded in time, and
leaving nothing of its own behind when that time runs out."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile


def run_bounded(command: list[str], timeout_s: float,
                env: dict[str, str] | None = None) -> tuple[int, str]:
    """(exit code, output) of ``command``; the code is -1 when it ran out of time.

    Output goes to a file, not a pipe: a server such a tool starts (pg_ctl start) inherits
    it, and a pipe would then never reach end-of-file.  A session of its own, so that a
    timeout ends the whole group we started (runuser and pg_ctl; the shell script and the
    Erlang VM of rabbitmqctl), not just its first process.
    """
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, env=env)
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = -1
        out.seek(0)
        return code, out.read().decode(errors="replace")
