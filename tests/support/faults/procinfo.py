"""What Linux's /proc says of a process: enough to be sure a PID is still the process we
started (PIDs get reused) before a fault test signals it."""

from __future__ import annotations

from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (which may hold spaces and parentheses):
    [state, ppid, ...], or None once the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def parent_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def identity(pid: int) -> tuple[int, str] | None:
    """(pid, start time in clock ticks since boot) while it runs, None once it has exited
    (a zombie has exited): a reused PID has another start time."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] == "Z":
        return None
    return pid, fields[19]


def children_of(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def identities(pids: list[int]) -> list[tuple[int, str]]:
    """The identities of those of ``pids`` that run now."""
    return [i for i in map(identity, pids) if i is not None]


def still_running(known: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Those processes (by identity) that have not exited yet."""
    return [i for i in known if identity(i[0]) == i]


def listening(port: int) -> bool:
    """Whether some process listens on TCP ``port`` of 127.0.0.1 or of every address: read
    from /proc/net/tcp rather than connecting, which a server may log or count."""
    wanted = {f"0100007F:{port:04X}", f"00000000:{port:04X}"}
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(f[1] in wanted and f[3] == "0A" for f in (line.split() for line in lines))
