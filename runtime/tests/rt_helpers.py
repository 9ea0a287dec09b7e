"""Shared pieces of the binmx-runtime tests (no MXNet: these run in the runtime's own venv)."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def fixture_index() -> dict:
    with open(FIXTURES / "index.json") as f:
        return json.load(f)


def available_isas() -> list[str]:
    """ISA paths the runtime accepts on this machine (a load under BINMX_ISA=X succeeds)."""
    import binmx_runtime

    case = FIXTURES / "lenet_fold"
    out = []
    for isa in ("scalar", "avx2", "avx512", "neon"):
        old = os.environ.get("BINMX_ISA")
        os.environ["BINMX_ISA"] = isa
        try:
            binmx_runtime.load(case / "model", 1, input_shape=(2, 1, 28, 28), threads=1)
            out.append(isa)
        except binmx_runtime.RuntimeLoadError:
            pass
        finally:
            if old is None:
                del os.environ["BINMX_ISA"]
            else:
                os.environ["BINMX_ISA"] = old
    return out


_DTYPE_FLAGS = {
    "float32": 0,
    "float64": 1,
    "float16": 2,
    "uint8": 3,
    "int32": 4,
    "int8": 5,
    "int64": 6,
}


def write_params(path, arrays: dict) -> None:
    """MXNet's NDArray list file (what mx.nd.save writes: magic 0x112, V2 arrays, names)."""
    import numpy as np

    out = [struct.pack("<QQQ", 0x112, 0, len(arrays))]
    for a in arrays.values():
        a = np.ascontiguousarray(a)
        out.append(struct.pack("<Ii", 0xF993FAC9, 0))
        out.append(struct.pack("<I", a.ndim) + b"".join(struct.pack("<q", d) for d in a.shape))
        out.append(struct.pack("<iii", 1, 0, _DTYPE_FLAGS[str(a.dtype)]))
        out.append(a.tobytes())
    out.append(struct.pack("<Q", len(arrays)))
    for name in arrays:
        b = name.encode()
        out.append(struct.pack("<Q", len(b)) + b)
    with open(path, "wb") as f:
        f.write(b"".join(out))


def dense_model(prefix, weight, bias) -> None:
    """data -> FullyConnected(num_hidden = len(bias)) as a symbol file and a params file."""
    graph = {
        "nodes": [
            {"op": "null", "name": "data", "inputs": []},
            {"op": "null", "name": "fc_weight", "inputs": []},
            {"op": "null", "name": "fc_bias", "inputs": []},
            {
                "op": "FullyConnected",
                "name": "fc",
                "attrs": {"num_hidden": str(len(bias))},
                "inputs": [[0, 0, 0], [1, 0, 0], [2, 0, 0]],
            },
        ],
        "arg_nodes": [0, 1, 2],
        "heads": [[3, 0, 0]],
    }
    with open(f"{prefix}-symbol.json", "w") as f:
        json.dump(graph, f)
    write_params(f"{prefix}-0001.params", {"arg:fc_weight": weight, "arg:fc_bias": bias})
