"""One private RabbitMQ node: its own name, ports, data and log directories and Erlang
cookie, started and killed by the fault tests, never the machine's shared node.

Only processes started here are ever signalled, always by their own PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.support.faults.commands import run_bounded
from tests.support.faults.procinfo import children_of, listening, parent_of
from tests.support.services import free_port

# Debian's /usr/sbin/rabbitmq* are wrappers that switch to the rabbitmq user and its home,
# and with it to the shared node's Erlang cookie; the real scripts are here.
RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")

# Erlang's schedulers spin while idle by default; on a 2-core machine shared with other
# test runs, three spinning nodes would take the CPU from everything else.
ERL_ARGS = "+sbwt none +sbwtdcpu none +sbwtdio none"
# Every Erlang VM started here (the node and each rabbitmqctl) listens for distribution
# on 127.0.0.1 only, as /etc/rabbitmq/rabbitmq-env.conf has the shared node do.
ERL_FLAGS = "-kernel inet_dist_use_interface {127,0,0,1}"


def rabbit_tool(name: str) -> Path:
    tool = RABBIT_BIN / name
    if tool.exists():
        return tool
    found = shutil.which(name)
    return Path(found) if found else tool


def installed() -> bool:
    return rabbit_tool("rabbitmq-server").exists() and rabbit_tool("rabbitmqctl").exists()


class RabbitNode:
    """A RabbitMQ node under ``base/<short name>``, in the foreground of a process of ours.

    ``rabbitmq-server`` in the foreground is a shell script that runs the Erlang VM as its
    child (to turn SIGTERM into a clean stop), so the VM's PID is not the one Popen gives:
    it is read from the PID file the node writes at boot, and trusted only while that
    process is the child of our script.
    """

    def __init__(self, short_name: str, base: Path, home: Path) -> None:
        self.short_name = short_name
        self.name = f"{short_name}@localhost"
        self.dir = base / short_name
        self.home = home  # holds the cluster's .erlang.cookie, for the node and the CLI
        self.amqp_port = free_port()
        self.dist_port = free_port()
        self.console = self.dir / "console.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.beam_pid: int | None = None
        self.dir.mkdir(parents=True)
        (self.dir / "enabled_plugins").write_text("[].\n")  # no plugins, no extra ports
        (self.dir / "rabbitmq.conf").write_text(
            # As deploy/k8s/rabbitmq.yaml configures production's: the side of a
            # partition without a majority pauses rather than diverges.
            "cluster_partition_handling = pause_minority\n")
        (self.dir / "rabbitmq-env.conf").write_text("")  # not /etc's, the shared node's

    def cli_env(self) -> dict[str, str]:
        """What both the node and rabbitmqctl need: the cookie (in HOME), and none of the
        shared node's environment file."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        env.update(HOME=str(self.home), ERL_FLAGS=ERL_FLAGS, ERL_EPMD_ADDRESS="127.0.0.1",
                   RABBITMQ_CONF_ENV_FILE=str(self.dir / "rabbitmq-env.conf"))
        return env

    def server_env(self) -> dict[str, str]:
        return {**self.cli_env(),
                "RABBITMQ_NODENAME": self.name,
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODE_PORT": str(self.amqp_port),
                "RABBITMQ_DIST_PORT": str(self.dist_port),
                "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
                "RABBITMQ_LOG_BASE": str(self.dir / "log"),
                "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": ERL_ARGS}

    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"

    def start(self) -> None:
        """Launch the node (same name, ports and data as before, after a kill); returns at
        once: ``wait_booted`` waits for it."""
        assert not self.running(), f"{self.name} is already running"
        self.beam_pid = None
        with self.console.open("ab") as out:
            # A session of its own: a signal meant for the test runner never reaches it.
            self.proc = subprocess.Popen([str(rabbit_tool("rabbitmq-server"))],
                                         env=self.server_env(), stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_booted(self, deadline: float) -> None:
        """Until the node's VM is known and RabbitMQ runs in it, or fail by ``deadline``
        (a ``time.monotonic()`` value) with the node's log."""
        # Cheap checks first: every rabbitmqctl is an Erlang VM of its own, and polling
        # with them would take the CPU from the nodes that are booting.
        while self.beam_pid is None or not listening(self.dist_port):
            if self.beam_pid is None:
                self.beam_pid = self._own_beam_pid()
            self._check_alive(deadline)
            time.sleep(0.1)
        while True:
            left = deadline - time.monotonic()
            code, output = self.ctl_status("await_startup", "--timeout", str(max(1, int(left))),
                                           timeout_s=max(left, 1) + 5)
            if code == 0:
                return
            # It fails at once while the name is not yet registered with epmd.
            self._check_alive(deadline, output)
            time.sleep(0.5)

    def _check_alive(self, deadline: float, output: str = "") -> None:
        if not self.running():
            raise RuntimeError(f"{self.name} exited:\n{output}\n{self.log_tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{self.name} did not boot in time:\n{output}\n"
                               f"{self.log_tail()}")

    def _own_beam_pid(self) -> int | None:
        """The PID the node wrote to its PID file, if that process is our script's child
        (the file outlives a killed node, and PIDs get reused)."""
        assert self.proc is not None
        try:
            pid = int((self.dir / "mnesia" / f"{self.name}.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if parent_of(pid) == self.proc.pid else None

    def ctl_status(self, *args: str, timeout_s: float = 60) -> tuple[int, str]:
        """``rabbitmqctl -n <this node> ARGS`` -> (exit code, output)."""
        return run_bounded([str(rabbit_tool("rabbitmqctl")), "-n", self.name, *args],
                           timeout_s, env=self.cli_env())

    def ctl(self, *args: str, timeout_s: float = 60) -> str:
        """``rabbitmqctl -n <this node> ARGS``; its output, or an error saying why not."""
        code, output = self.ctl_status(*args, timeout_s=timeout_s)
        if code != 0:
            raise RuntimeError(f"rabbitmqctl -n {self.name} {' '.join(args)} failed ({code}):"
                               f"\n{output}")
        return output

    def kill_9(self) -> None:
        """SIGKILL to the node's Erlang VM: no clean shutdown, its peers see it vanish."""
        assert self.beam_pid is not None and self.proc is not None, f"{self.name} not booted"
        os.kill(self.beam_pid, signal.SIGKILL)
        self.proc.wait(timeout=30)  # our script ends with its child
        self.beam_pid = None

    def stop(self) -> None:
        """Whatever state it is in, make sure it is gone (teardown)."""
        if self.proc is not None and self.proc.poll() is None:
            # The VM first, so that our script reaps it and ends by itself; the script's
            # whole process group only if it does not (the VM would then be left a zombie).
            for pid in [self.beam_pid] if self.beam_pid else children_of(self.proc.pid):
                os.kill(pid, signal.SIGKILL)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        self.beam_pid = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.console.read_text(errors="replace")
        except OSError:
            return ""
        return f"--- {self.name} console\n" + "\n".join(text.splitlines()[-lines:])
