"""Per-layer model summary: precision, shapes, 1-bit, k-bit and 32-bit parameters, memory, MACs.

For each operator node of a symbol: the input precision (1 for a QConvolution /
QFullyConnected / QActivation with act_bit 1, k for k-bit, 32 for float), the bits each weight
takes once converted (``w bits``: a Q layer's weight_bit when it is 1..8, which the converter
packs at that many bits, docs/design.md §2; 32 for wider and float weights), the kernel a Q
layer's forward runs (``xnor``; ``bitserial`` or ``int8``, the integer k-bit kernels;
``float``, the fake-quant floats, for bit widths without an integer kernel), the output shape,
the number of 1-bit, k-bit (2..8 bits) and 32-bit parameters (biases, scales, alpha,
BatchNorm parameters and statistics and every float layer are 32-bit), the memory they take
converted, and the multiply-accumulates: 1-bit MACs for Q layers with act_bit = weight_bit = 1,
32-bit MACs for float and k-bit layers. Counts are per batch
of the given ``data_shape``. Totals give the model size, its float-32 equivalent, the
compression ratio and the share of binary MACs (as Larq's model summary does).

Given the checkpoint the symbol came from (``checkpoint=(prefix, epoch)``) and with the
``binmx-runtime`` distribution installed, the table gains a measured column: the median
latency of each layer in the binmx runtime (``binmx_runtime.Model.profile``, batch of
``data_shape``, one thread by default). Layers the runtime fuses into the one before (a
BatchNorm, relu or max-pool after a float convolution) show ``fused``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import mxnet as mx

from binmx import xnor
from binmx._graph import Q_OPS, Graph, bits, bool_attr, int_attr, parse_ints

__all__ = ["LayerSummary", "ModelSummary", "summary"]

_CONV_OPS = ("Convolution", "QConvolution")
_FC_OPS = ("FullyConnected", "QFullyConnected")
_Q_OPS = Q_OPS


@dataclass
class LayerSummary:
    name: str
    op: str
    precision: str
    output_shape: tuple[int, ...]
    # The forward kernel of a Q layer: "xnor" (binary), "bitserial" / "int8" (integer k-bit,
    # binmx.xnor.kbit_path), "float" (fake-quant floats or act_bit 32); "" for other ops.
    kernel: str = ""
    weight_bits: int = 0  # bits a converted weight takes per element (0: no weight)
    params_1bit: int = 0
    params_kbit: int = 0  # weights stored at weight_bits = 2..8 bits
    params_32bit: int = 0
    macs_1bit: int = 0
    macs_32bit: int = 0
    runtime_ms: float | None = None  # measured by binmx_runtime, when available
    fused_into: str | None = None  # the runtime layer this one is fused into

    @property
    def memory_bytes(self) -> int:
        return (
            math.ceil(self.params_1bit / 8)
            + math.ceil(self.params_kbit * self.weight_bits / 8)
            + 4 * self.params_32bit
        )


@dataclass
class ModelSummary:
    layers: list[LayerSummary] = field(default_factory=list)
    runtime_total_ms: float | None = None
    runtime_note: str = ""

    @property
    def params_1bit(self) -> int:
        return sum(layer.params_1bit for layer in self.layers)

    @property
    def params_kbit(self) -> int:
        return sum(layer.params_kbit for layer in self.layers)

    @property
    def params_32bit(self) -> int:
        return sum(layer.params_32bit for layer in self.layers)

    @property
    def model_bytes(self) -> int:
        return sum(layer.memory_bytes for layer in self.layers)

    @property
    def float32_bytes(self) -> int:
        return 4 * (self.params_1bit + self.params_kbit + self.params_32bit)

    @property
    def compression(self) -> float:
        return self.float32_bytes / self.model_bytes if self.model_bytes else 1.0

    @property
    def binary_mac_share(self) -> float:
        total = sum(layer.macs_1bit + layer.macs_32bit for layer in self.layers)
        return sum(layer.macs_1bit for layer in self.layers) / total if total else 0.0

    def table(self) -> str:
        head = (
            "layer",
            "op",
            "in bits",
            "w bits",
            "kernel",
            "output shape",
            "1-bit par",
            "k-bit par",
            "32-bit par",
            "memory",
            "1-bit MACs",
            "32-bit MACs",
        )
        timed = self.runtime_total_ms is not None
        if timed:
            head = (*head, "runtime ms")
        rows = [head]
        for layer in self.layers:
            row = (
                layer.name,
                layer.op,
                layer.precision,
                str(layer.weight_bits) if layer.weight_bits else "-",
                layer.kernel or "-",
                str(layer.output_shape),
                f"{layer.params_1bit:,}",
                f"{layer.params_kbit:,}",
                f"{layer.params_32bit:,}",
                _human(layer.memory_bytes),
                f"{layer.macs_1bit:,}",
                f"{layer.macs_32bit:,}",
            )
            if timed:
                if layer.runtime_ms is not None:
                    cell = f"{layer.runtime_ms:.4f}"
                elif layer.fused_into is not None:
                    cell = "fused"
                else:
                    cell = "-"
                row = (*row, cell)
            rows.append(row)
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = [
            "  ".join(
                c.ljust(w) if i < 6 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
            for r in rows
        ]
        lines.insert(1, "-" * len(lines[0]))
        lines += [
            "-" * len(lines[0]),
            f"total params: {self.params_1bit:,} 1-bit, {self.params_kbit:,} k-bit (2..8), "
            f"{self.params_32bit:,} 32-bit",
            f"model size: {_human(self.model_bytes)} "
            f"(float-32 equivalent {_human(self.float32_bytes)}, "
            f"compression {self.compression:.2f}x)",
            f"binary MACs: {100.0 * self.binary_mac_share:.2f}% of all MACs",
        ]
        if timed:
            lines.append(
                f"binmx runtime: {self.runtime_total_ms:.4f} ms per batch (sum of per-layer "
                f"medians; {self.runtime_note})"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return str(n)


def summary(
    sym: mx.sym.Symbol,
    data_shape: tuple[int, ...],
    *,
    data_name: str = "data",
    checkpoint: tuple[str, int] | None = None,
    threads: int = 1,
    repeat: int = 20,
) -> ModelSummary:
    """Summarise ``sym`` for an input of ``data_shape`` (see the module docstring).

    With ``checkpoint=(prefix, epoch)`` (the files ``sym`` came from) and binmx_runtime
    installed, each layer's latency is measured in the runtime (``threads``, median of
    ``repeat`` runs on a standard-normal input).
    """
    if not isinstance(data_shape, (tuple, list)) or not all(
        isinstance(d, int) and d > 0 for d in data_shape
    ):
        raise ValueError(
            f"Expected `data_shape` to be a tuple of positive ints, got {data_shape!r}"
        )
    if data_name not in sym.list_arguments():
        raise ValueError(f"`data_name`={data_name!r} is not an input of the symbol")
    internals = sym.get_internals()
    _, out_shapes, _ = internals.infer_shape_partial(**{data_name: tuple(data_shape)})
    shapes = dict(zip(internals.list_outputs(), out_shapes or [], strict=False))
    nodes = Graph.from_symbol(sym).nodes

    def entry_shape(entry: list[int]) -> tuple[int, ...]:
        node = nodes[entry[0]]
        if node["op"] == "null":
            key = node["name"]
        else:
            key = f"{node['name']}_output"
            if key not in shapes:
                key = f"{node['name']}_output{entry[1]}"
        return tuple(shapes.get(key, ()))

    result = ModelSummary()
    for node_id, node in nodes.items():
        op = node["op"]
        if op == "null":
            continue
        attrs = node.get("attrs", {})
        out = entry_shape([node_id, 0, 0])
        in_shape = entry_shape(node["inputs"][0]) if node["inputs"] else ()
        act, wbit = bits(attrs) if op in _Q_OPS else (32, 32)
        binary = op in _Q_OPS and act == 1 and wbit == 1
        layer = LayerSummary(node["name"], op, str(act), out)
        param_inputs = [
            nodes[e[0]]
            for e in node["inputs"][1:]
            if nodes[e[0]]["op"] == "null"
            and nodes[e[0]]["name"] != data_name
            and not nodes[e[0]]["name"].endswith("label")
        ]
        macs = 0
        weight = 0
        if op in _CONV_OPS and len(in_shape) == 4 and len(out) == 4:
            kernel = parse_ints(attrs.get("kernel")) or ()
            groups = int_attr(attrs, "num_group", 1)
            weight = out[1] * (in_shape[1] // groups) * math.prod(kernel)
            macs = out[0] * out[2] * out[3] * weight
        elif op in _FC_OPS and in_shape and out:
            flatten = bool_attr(attrs, "flatten", True)
            depth = math.prod(in_shape[1:]) if flatten else in_shape[-1]
            weight = out[-1] * depth
            macs = math.prod(out[:-1]) * weight
        if op in _Q_OPS and weight:
            depth = weight // out[1] if op in _CONV_OPS else weight // out[-1]
            if binary:
                layer.kernel = "xnor"
            elif act == 1:
                layer.kernel = "float"
            else:
                layer.kernel = xnor.kbit_path(act, wbit, depth)
        if weight:
            layer.weight_bits = wbit if op in _Q_OPS and wbit <= 8 else 32
            if layer.weight_bits == 1:
                layer.params_1bit = weight
            elif layer.weight_bits <= 8:
                layer.params_kbit = weight
            else:
                layer.params_32bit = weight
            for p in param_inputs[1:]:  # bias, alpha
                layer.params_32bit += math.prod(shapes.get(p["name"], ()) or (0,))
        else:
            for p in param_inputs:  # BatchNorm gamma/beta/mean/var and other float params
                layer.params_32bit += math.prod(shapes.get(p["name"], ()) or (0,))
        if binary:
            layer.macs_1bit = macs
        else:
            layer.macs_32bit = macs
        result.layers.append(layer)
    if checkpoint is not None:
        _add_runtime_latency(result, checkpoint, tuple(data_shape), threads, repeat)
    return result


def _add_runtime_latency(
    result: ModelSummary,
    checkpoint: tuple[str, int],
    data_shape: tuple[int, ...],
    threads: int,
    repeat: int,
) -> None:
    """Fill ``runtime_ms`` from binmx_runtime's profile; nothing when it is not installed."""
    try:
        import binmx_runtime
    except ImportError:
        return
    import numpy as np

    prefix, epoch = checkpoint
    model = binmx_runtime.load(prefix, epoch, input_shape=data_shape, threads=threads)
    x = np.random.default_rng(0).standard_normal(data_shape).astype(np.float32)
    profile = model.profile(x, repeat=repeat)
    by_name = {layer.name: layer for layer in result.layers}
    for row in profile:
        first, *fused = row["name"].split("+")
        if first in by_name:
            by_name[first].runtime_ms = row["ms"]
        for name in fused:
            if name in by_name:
                by_name[name].fused_into = first
    result.runtime_total_ms = sum(row["ms"] for row in profile)
    result.runtime_note = f"{model.threads} thread(s), {model.isa}"
