"""Keep MXNet's known informational chatter off the user's terminal.

libmxnet writes some INFO lines straight to file descriptor 2 from C++ (dmlc ``LOG(INFO)``),
with no level switch: binding an executor while ``MXNET_SUBGRAPH_BACKEND=NONE`` prints
"MXNET_SUBGRAPH_BACKEND=NONE is detected, subgraph backend is not in use" every time.
``filtered_stderr`` sends fd 2 to a temporary file for the duration of a block and copies every
line back to the real fd 2 at the end, except the lines that contain one of the given
fragments. Nothing else is lost, only delayed to the end of the block, so keep blocks short
(one bind). The other chatter line, "Subgraph backend MKLDNN is activated.", has a switch
(``MXNET_SUBGRAPH_VERBOSE=0``, read once per process at the first bind).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

# Lines libmxnet 1.9.1 prints unconditionally (graph_executor.cc) that carry no information
# for a binmx user: binmx sets the variable itself (binmx.converter.without_subgraph_fusion).
MXNET_CHATTER = ("MXNET_SUBGRAPH_BACKEND=NONE is detected",)


@contextlib.contextmanager
def filtered_stderr(drop: tuple[str, ...] = MXNET_CHATTER) -> Iterator[None]:
    """Within the block, lines written to fd 2 that contain a fragment of ``drop`` vanish;
    all other output to fd 2 is written back, in order, when the block ends."""
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 to filter
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        sys.stderr.flush()
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [
                line
                for line in tmp.read().splitlines(keepends=True)
                if not any(d.encode() in line for d in drop)
            ]
            data = memoryview(b"".join(kept))
            while data:
                data = data[os.write(2, data) :]
