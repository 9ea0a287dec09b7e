"""binmx.distributed: dist_sync training with a scheduler, a server and 2 workers on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from binmx import distributed

REPO = Path(__file__).resolve().parents[1]

# A worker: a small binary net trained a few dist_sync steps on rank-specific data; it saves
# its arg params (and the initial ones) so the test can compare the two workers.
WORKER = textwrap.dedent(
    """
    import sys
    import mxnet as mx
    import numpy as np
    import binmx  # noqa: F401  (Q operators)

    out = sys.argv[1]
    kv = mx.kv.create("dist_sync")
    rng = np.random.default_rng(100 + kv.rank)  # different data on each worker
    x = rng.standard_normal((64, 3, 8, 8)).astype(np.float32)
    y = rng.integers(0, 4, 64).astype(np.float32)
    data = mx.sym.Variable("data")
    h = mx.sym.Convolution(data, kernel=(3, 3), num_filter=8, name="conv0")
    h = mx.sym.BatchNorm(h, name="bn0")
    h = mx.sym.QActivation(h, backward_only=True, name="qact")
    h = mx.sym.QConvolution(h, kernel=(3, 3), num_filter=70, pad=(1, 1), name="qconv")
    h = mx.sym.BatchNorm(h, name="bn1")
    h = mx.sym.FullyConnected(mx.sym.Flatten(h), num_hidden=4, name="fc")
    sym = mx.sym.SoftmaxOutput(h, name="softmax")
    it = mx.io.NDArrayIter(x, y, batch_size=16)
    mod = mx.mod.Module(sym)
    mod.bind(data_shapes=it.provide_data, label_shapes=it.provide_label)
    mx.random.seed(kv.rank)  # different local init: the kvstore must make them equal
    mod.init_params(mx.init.Xavier())
    mod.init_optimizer(kvstore=kv, optimizer="sgd",
                       optimizer_params={"learning_rate": 0.1, "momentum": 0.9})
    arg0 = {k: v.copy() for k, v in mod.get_params()[0].items()}
    for batch in it:  # 4 steps
        mod.forward_backward(batch)
        mod.update()
    arg, _ = mod.get_params()
    np.savez(f"{out}/rank{kv.rank}.npz", **{k: v.asnumpy() for k, v in arg.items()})
    np.savez(f"{out}/init{kv.rank}.npz", **{k: v.asnumpy() for k, v in arg0.items()})
    print("worker", kv.rank, "of", kv.num_workers, "done", flush=True)
    """
)


def _all_gone(pgids: list[int]) -> list[tuple[int, int]]:
    """(pid, pgid) of every live (not zombie) process in the given process groups."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        state, pgrp = fields[0], int(fields[2])
        if pgrp in pgids and state != "Z":
            alive.append((int(entry.name), pgrp))
    return alive


@pytest.mark.slow
def test_dist_sync_two_workers_end_with_identical_params(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    result = distributed.launch(
        [sys.executable, str(script), str(tmp_path)], num_workers=2, num_servers=1, timeout=120
    )
    assert result.ok, result
    assert result.worker_returncodes == [0, 0]
    assert result.scheduler_returncode == 0 and result.server_returncodes == [0]
    assert _all_gone(result.pids) == []
    a, b = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    i0 = np.load(tmp_path / "init0.npz")
    assert sorted(a.files) == sorted(b.files)
    assert "qconv_weight" in a.files
    for name in a.files:
        assert np.array_equal(a[name], b[name]), f"{name} differs between workers"
    # Training moved the weights (so equality is not that of two untouched copies).
    assert not np.array_equal(a["qconv_weight"], i0["qconv_weight"])


def test_failing_worker_stops_everything(tmp_path: Path) -> None:
    t0 = time.monotonic()
    result = distributed.launch(
        [sys.executable, "-c", "import sys; sys.exit(3)"],
        num_workers=2,
        timeout=60,
        shutdown_grace=1,
    )
    assert not result.ok
    assert 3 in result.worker_returncodes
    # Scheduler/server would wait for the missing worker forever: the launcher must kill them.
    assert time.monotonic() - t0 < 30
    assert _all_gone(result.pids) == []


def test_timeout_kills_every_process(tmp_path: Path) -> None:
    # The worker also starts a grandchild in its process group; that must die too.
    code = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
        "time.sleep(300)"
    )
    t0 = time.monotonic()
    result = distributed.launch([sys.executable, "-c", code], num_workers=2, timeout=3)
    elapsed = time.monotonic() - t0
    assert result.timed_out and not result.ok
    assert elapsed < 30, elapsed
    assert len(result.killed) >= 2
    assert _all_gone(result.pids) == []


def test_environment_is_loopback_only(tmp_path: Path) -> None:
    code = (
        "import os, json, sys; keys = ['DMLC_ROLE', 'DMLC_PS_ROOT_URI', 'DMLC_PS_ROOT_PORT', "
        "'DMLC_NODE_HOST', 'DMLC_INTERFACE', 'DMLC_NUM_SERVER', 'DMLC_NUM_WORKER']; "
        f"open(os.path.join({str(tmp_path)!r}, str(os.getpid())), 'w').write("
        "json.dumps({k: os.environ.get(k) for k in keys}))"
    )
    # Workers exit without connecting, so scheduler/server are killed after the short grace.
    result = distributed.launch(
        [sys.executable, "-c", code], num_workers=2, timeout=60, shutdown_grace=1
    )
    assert result.worker_returncodes == [0, 0]
    import json

    envs = [json.loads(p.read_text()) for p in tmp_path.iterdir()]
    assert len(envs) == 2
    for env in envs:
        assert env["DMLC_ROLE"] == "worker"
        assert env["DMLC_PS_ROOT_URI"] == "127.0.0.1" and env["DMLC_NODE_HOST"] == "127.0.0.1"
        assert env["DMLC_INTERFACE"] == "lo"
        assert env["DMLC_NUM_SERVER"] == "1" and env["DMLC_NUM_WORKER"] == "2"
        assert 0 < int(env["DMLC_PS_ROOT_PORT"]) < 65536
    assert _all_gone(result.pids) == []


def test_launch_argument_errors() -> None:
    with pytest.raises(ValueError, match="`num_workers`"):
        distributed.launch(["true"], num_workers=0)
    with pytest.raises(ValueError, match="`timeout`"):
        distributed.launch(["true"], timeout=0)
    with pytest.raises(ValueError, match="`command`"):
        distributed.launch([])


def test_cli_without_command_fails() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "launch_local.py"), "-n", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "worker command" in proc.stderr


def test_cli_reports_worker_failure() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "binmx.distributed",
            "-n",
            "1",
            "--timeout",
            "60",
            "--",
            sys.executable,
            "-c",
            "import sys; sys.exit(5)",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 5, proc.stderr
    assert "worker exit codes [5]" in proc.stderr


def test_cli_interrupt_stops_every_process(tmp_path: Path) -> None:
    import signal

    pidfile = tmp_path / "worker.pid"
    code = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(300)"
    proc = subprocess.Popen(
        [sys.executable, "-m", "binmx.distributed", "-n", "1", "--timeout", "120", "--"]
        + [sys.executable, "-c", code],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline, "worker did not start"
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.1)
    worker = int(pidfile.read_text())
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert _all_gone([worker]) == []
