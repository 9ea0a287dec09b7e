"""Launch MXNet parameter-server training on this machine only (127.0.0.1).

MXNet's ``dist_sync`` / ``dist_async`` kvstores need one scheduler, one or more servers and the
workers, all told where the scheduler listens through ``DMLC_*`` environment variables. MXNet's
own ``tools/launch.py`` fails on Python >= 3.9 (``Thread.isAlive``) and binds a non-loopback
address; this launcher keeps everything on the loopback interface and owns its processes:

- scheduler, servers and workers all get ``DMLC_PS_ROOT_URI=127.0.0.1``, a free
  ``DMLC_PS_ROOT_PORT``, ``DMLC_NODE_HOST=127.0.0.1``, ``DMLC_INTERFACE=lo``,
  ``DMLC_NUM_SERVER``, ``DMLC_NUM_WORKER`` and their ``DMLC_ROLE``;
- scheduler and servers run ``python -c "import mxnet"`` (importing mxnet with that role runs
  the server loop until the workers finish); the workers run the user's command;
- every process starts in its own process group; when a worker fails, when ``timeout`` passes,
  or on any exception / Ctrl-C, every group is sent SIGTERM, then SIGKILL after a grace period,
  so no process outlives :func:`launch`.

Command line::

    python -m binmx.distributed -n 2 -s 1 --timeout 600 -- python examples/train_mnist.py \\
        --kv-store dist_sync
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["LaunchResult", "free_port", "launch", "main"]

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on ``host`` that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class LaunchResult:
    """What happened: each worker's exit status and whether the launcher had to kill anything."""

    worker_returncodes: list[int | None]
    server_returncodes: list[int | None]
    scheduler_returncode: int | None
    timed_out: bool = False
    killed: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.timed_out and all(rc == 0 for rc in self.worker_returncodes)


@dataclass
class _Proc:
    role: str
    popen: subprocess.Popen


def _start(
    role: str, cmd: Sequence[str], env: Mapping[str, str], cwd: str | None, quiet: bool
) -> _Proc:
    out = subprocess.DEVNULL if quiet else None
    popen = subprocess.Popen(
        list(cmd), env=dict(env), cwd=cwd, start_new_session=True, stdout=out, stderr=out
    )
    return _Proc(role, popen)


def _kill_all(procs: list[_Proc], grace: float) -> list[str]:
    """SIGTERM every live process group, SIGKILL what is left after ``grace`` seconds."""
    killed = []
    live = [p for p in procs if p.popen.poll() is None]
    for p in live:
        killed.append(f"{p.role}:{p.popen.pid}")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.popen.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in live:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
    for p in procs:
        # Also sweep groups whose leader already exited but may have left children behind.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.popen.pid, signal.SIGKILL)
        if p.popen.poll() is None:
            p.popen.wait()
    return killed


def launch(
    command: Sequence[str],
    *,
    num_workers: int = 2,
    num_servers: int = 1,
    timeout: float = 600.0,
    shutdown_grace: float = 30.0,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    port: int | None = None,
    quiet_servers: bool = True,
) -> LaunchResult:
    """Run ``command`` as ``num_workers`` workers with a scheduler and ``num_servers`` servers.

    Returns when every worker has exited (then waits up to ``shutdown_grace`` seconds for the
    scheduler and servers to stop by themselves) or after ``timeout`` seconds. Whatever is still
    running at the end, or when a worker fails, or on an exception, is killed with its process
    group. Worker output goes to this process's stdout/stderr.
    """
    if not command:
        raise ValueError("Expected a worker `command`, got an empty one")
    if num_workers < 1:
        raise ValueError(f"Expected `num_workers` >= 1, got {num_workers!r}")
    if num_servers < 1:
        raise ValueError(f"Expected `num_servers` >= 1, got {num_servers!r}")
    if timeout <= 0:
        raise ValueError(f"Expected a positive `timeout` in seconds, got {timeout!r}")
    base = dict(os.environ if env is None else env)
    base.update(
        DMLC_PS_ROOT_URI=LOOPBACK,
        DMLC_PS_ROOT_PORT=str(port if port is not None else free_port()),
        DMLC_NODE_HOST=LOOPBACK,
        DMLC_INTERFACE="lo",
        DMLC_NUM_SERVER=str(num_servers),
        DMLC_NUM_WORKER=str(num_workers),
    )
    server_cmd = [sys.executable, "-c", "import mxnet"]
    procs: list[_Proc] = []
    result = LaunchResult([], [], None)
    deadline = time.monotonic() + timeout
    try:
        procs.append(
            _start("scheduler", server_cmd, {**base, "DMLC_ROLE": "scheduler"}, cwd, quiet_servers)
        )
        for _ in range(num_servers):
            procs.append(
                _start("server", server_cmd, {**base, "DMLC_ROLE": "server"}, cwd, quiet_servers)
            )
        workers = []
        for _ in range(num_workers):
            w = _start("worker", command, {**base, "DMLC_ROLE": "worker"}, cwd, False)
            procs.append(w)
            workers.append(w)
        result.pids = [p.popen.pid for p in procs]
        failed = False
        while True:
            codes = [w.popen.poll() for w in workers]
            if any(c not in (None, 0) for c in codes):
                failed = True
                break
            if all(c == 0 for c in codes):
                break
            if any(p.role != "worker" and p.popen.poll() not in (None, 0) for p in procs):
                failed = True  # scheduler or server died: the workers would hang
                break
            if time.monotonic() > deadline:
                result.timed_out = True
                break
            time.sleep(0.1)
        if not failed and not result.timed_out:
            grace_end = min(deadline, time.monotonic() + shutdown_grace)
            for p in procs:
                try:
                    p.popen.wait(timeout=max(0.0, grace_end - time.monotonic()))
                except subprocess.TimeoutExpired:
                    break
    finally:
        result.killed = _kill_all(procs, grace=5.0)
    result.worker_returncodes = [p.popen.returncode for p in procs if p.role == "worker"]
    result.server_returncodes = [p.popen.returncode for p in procs if p.role == "server"]
    result.scheduler_returncode = procs[0].popen.returncode if procs else None
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m binmx.distributed",
        description="Run a dist_sync/dist_async MXNet job on 127.0.0.1: scheduler, servers, "
        "workers.",
    )
    p.add_argument("-n", "--num-workers", type=int, default=2)
    p.add_argument("-s", "--num-servers", type=int, default=1)
    p.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds before everything is killed"
    )
    p.add_argument("--port", type=int, default=None, help="scheduler port (default: a free one)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the worker command (after --)")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error(
            "missing the worker command, e.g. "
            "-- python examples/train_mnist.py --kv-store dist_sync"
        )
    try:
        result = launch(
            command,
            num_workers=args.num_workers,
            num_servers=args.num_servers,
            timeout=args.timeout,
            port=args.port,
        )
    except ValueError as exc:
        p.error(str(exc))
    except KeyboardInterrupt:  # launch() has already killed every process it started
        print("launch: interrupted; all processes stopped", file=sys.stderr)
        return 130
    if result.timed_out:
        print(
            f"launch: timed out after {args.timeout:g} s; killed {result.killed}", file=sys.stderr
        )
        return 124
    if not result.ok:
        print(
            f"launch: worker exit codes {result.worker_returncodes}; killed {result.killed}",
            file=sys.stderr,
        )
        bad = [rc for rc in result.worker_returncodes if rc not in (None, 0)]
        return bad[0] if bad and bad[0] > 0 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
