"""A ``listen`` setting (``host:port``): checked when the configuration loads, so that a
wrong one is said at start with the other configuration errors (exit 2), not at the bind.

Every listen setting uses :data:`Listen` (``[gateway] listen`` today; a ``[console]
listen`` would too)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator


def split_listen(listen: str) -> tuple[str, int]:
    """(host, port) of a listen value; an empty host is 127.0.0.1.  An IPv6 host is in
    brackets ("[::1]:8080").  ValueError for anything else."""
    host, colon, port = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:  # "::1:8080" could be either: IPv6 needs its brackets
        colon = ""
    if not colon or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"listen must be host:port (127.0.0.1:8080, [::1]:8080), "
                         f"not {listen!r}")
    return host or "127.0.0.1", int(port)


def _checked(listen: str) -> str:
    split_listen(listen)
    return listen


# The type of a listen setting: a str that split_listen accepts.
Listen = Annotated[str, AfterValidator(_checked)]
