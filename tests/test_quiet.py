"""binmx._quiet.filtered_stderr: MXNet's known chatter is dropped from fd 2, nothing else."""

from __future__ import annotations

import subprocess
import sys

CODE = r"""
import os
import mxnet as mx
from binmx._quiet import filtered_stderr
from binmx.converter import without_subgraph_fusion

os.write(2, b"before\n")
with filtered_stderr():
    os.write(2, b"[12:00:00] graph_executor.cc:60: MXNET_SUBGRAPH_BACKEND=NONE is detected, x\n")
    os.write(2, b"kept 1\n")
    os.write(2, b"kept 2 (no newline)")
os.write(2, b"\nafter\n")
with without_subgraph_fusion():  # a real bind: MXNet prints the NONE line here
    x = mx.sym.Variable("x")
    exe = (x * 2).bind(mx.cpu(), {"x": mx.nd.ones((2,))})
exe.forward()
os.write(2, b"end\n")
"""


def test_filtered_stderr_drops_only_the_known_lines() -> None:
    proc = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    err = proc.stderr
    assert "is detected" not in err, err
    lines = [ln for ln in err.splitlines() if ln in ("before", "kept 1", "after", "end")]
    assert lines == ["before", "kept 1", "after", "end"], err
    assert "kept 2 (no newline)" in err, err


def test_filtered_stderr_restores_fd_after_an_exception() -> None:
    code = (
        "import os\nfrom binmx._quiet import filtered_stderr\n"
        "try:\n    with filtered_stderr():\n        os.write(2, b'inside\\n')\n"
        "        raise RuntimeError('boom')\nexcept RuntimeError:\n    pass\n"
        "os.write(2, b'outside\\n')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines()[-2:] == ["inside", "outside"], proc.stderr
