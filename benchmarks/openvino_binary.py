"""OpenVINO baseline for the binmx runtime: the same converted binary network in OpenVINO's opset.

:func:`build_openvino_model` reads a model that ``model_converter --fold`` wrote
(``PREFIX-symbol.json`` + ``PREFIX-NNNN.params``) and builds the same network the way
OpenVINO's own binary models are built, so that the strongest x86 binary engine can be timed
against ``binmx_runtime`` in one process on the same weights (issue 13, "Speed").

Translation (binmx semantics: docs/design.md section 3 and :mod:`binmx.fold`):

* A 1-bit ``QConvolution`` (converted: packed weights) becomes
  ``FakeQuantize(levels=2) -> BinaryConvolution(mode="xnor-popcount")``. OpenVINO reads 0 as -1
  and 1 as +1 for both operands and computes ``dot = K - 2 * popcount(a XOR w)``, the dot
  product binmx computes (binmx bit 1 means -1, so the weight bits are inverted; the XOR is
  the same). Weights are u1 constants ``(F, C, kh, kw)``; OpenVINO 2026.4.1's CPU plugin reads
  their bytes LSB-first (element ``i`` is bit ``i % 8`` of byte ``i // 8``), while the
  ``Constant(u1, shape, list)`` constructor packs MSB-first, so the bytes are written into an
  ``ov.Tensor`` directly. With ``C % 8 != 0`` input channels it gives wrong results
  (measured with this packing and a per-filter byte-aligned one), so that is refused here.
* The sign ``bit = [x * s + b >= 0]`` (``input_affine``, or ``out_packed``'s
  ``out_scale``/``out_shift``) is a FakeQuantize with a per-channel threshold ``t = -b / s`` and
  output range {0, 1} (swapped to {1, 0} where ``s < 0``; a threshold beyond every finite
  value where ``s == 0``), as OpenVINO's binary models do. It equals binmx's sign except where
  ``x`` lies within float rounding of ``t``. ``FakeQuantize`` maps ``x <= t`` to its low
  output; the thresholds are nudged one ulp so that ``x == t`` (``y == 0``) gives +1 as in
  binmx.
* Workaround: OpenVINO 2026.4.1 miscomputes a BinaryConvolution fused with a residual add and
  the next sign: its CPU plugin fuses a FakeQuantize into the BinaryConvolution that produces
  its input when the FakeQuantize's constant inputs have no other reader, even where that
  output has other readers (the last unit of a stage feeds two signs, of conv1 and of the 1x1
  shortcut, with different thresholds): the other reader then gets the u1 output (measured:
  binary ResNet-18 logits off by up to 114, argmax wrong). So the sign of a residual
  ``QConvolution``'s output takes one shared constant as both thresholds, which keeps that
  FakeQuantize a node of its own (``shared_threshold_after_residual=True``, the default); all
  other signs have two threshold constants and are fused (u1 output), as in OpenVINO's models.
* Padding: ``pad_value=0`` (binmx's default, zero padding: padded taps add 0 to the dot) is
  ``pad_value=0.0`` in OpenVINO, which its CPU plugin implements exactly by excluding padded
  taps; binmx's +1 / -1 padding are ``pad_value=+1.0 / -1.0`` (measured equal on the CPU plugin).
* The epilogue ``out = alpha * dot + bias (+ residual)`` is ``Multiply``/``Add`` (/``Add``);
  ``out_packed`` / ``in_packed`` pairs hand over the {0, 1} tensor of the next sign.
* Float layers: ``Convolution`` (+ bias), ``Activation(relu)``, ``Pooling`` (max / avg, global),
  ``QChannelAffine`` (``Multiply``/``Add`` (+ ``Relu``)), ``transpose`` / ``QNHWCToNCHW``
  (``Transpose``, which OpenVINO cancels), ``Flatten``, ``FullyConnected``,
  ``softmax`` / ``SoftmaxOutput``. Anything else is a ``ValueError`` naming node, op and
  attribute.

Run ``python benchmarks/openvino_binary.py --help``: it builds the binary ResNet-18 (224x224,
batch 1), checks OpenVINO's output against ``binmx_runtime``'s and times both at 1 and 2 threads
(alternating runs), then prints OpenVINO's per-layer profile. Needs ``openvino`` (not a binmx
dependency), ``binmx_runtime``, and MXNet + binmx to read the ``.params`` file and generate the
model.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import openvino as ov
import openvino.opset13 as ops
from openvino import opset1

__all__ = [
    "build_openvino_model",
    "build_openvino_graph",
    "compile_openvino",
    "load_params",
    "logits_model",
    "openvino_profile",
    "run_openvino",
    "time_openvino",
]

_TRUE = ("true", "1")
_F32 = np.float32


# ----------------------------------------------------------------------------- attributes
def _bool(attrs: dict[str, str], key: str, default: bool = False) -> bool:
    value = attrs.get(key)
    return default if value is None else str(value).strip().lower() in _TRUE


def _int(attrs: dict[str, str], key: str, default: int) -> int:
    value = attrs.get(key)
    return default if value is None else int(str(value).strip())


def _tuple(attrs: dict[str, str], key: str, default: tuple[int, ...]) -> list[int]:
    value = attrs.get(key)
    if value is None or str(value).strip() in ("", "()"):
        return list(default)
    parsed = ast.literal_eval(str(value).strip())
    if isinstance(parsed, int):
        parsed = (parsed,)
    return [int(v) for v in parsed]


def _spatial(attrs: dict[str, str], key: str, default: int) -> list[int]:
    kernel = _tuple(attrs, "kernel", (1, 1))
    values = _tuple(attrs, key, (default,) * len(kernel))
    return values if len(values) == len(kernel) else values * len(kernel)


# ----------------------------------------------------------------------------- params
def load_params(params_path: str) -> dict[str, np.ndarray]:
    """The arrays of an MXNet ``.params`` file (NDArray list) as ``{name: ndarray}``, with the
    ``arg:`` / ``aux:`` prefixes dropped. Read with MXNet's own loader (imported here only)."""
    import mxnet as mx

    loaded = mx.nd.load(params_path)
    if not isinstance(loaded, dict):
        raise ValueError(f"Expected {params_path!r} to hold named arrays, got a list")
    out: dict[str, np.ndarray] = {}
    for key, value in loaded.items():
        name = key.split(":", 1)[1] if key.startswith(("arg:", "aux:")) else key
        out[name] = value.asnumpy()
    return out


# ----------------------------------------------------------------------------- building blocks
def _const(value: np.ndarray) -> ov.Output:
    return ops.constant(np.ascontiguousarray(value)).output(0)


def _per_channel(values: np.ndarray, rank: int = 4) -> np.ndarray:
    """``(C,)`` -> ``(1, C, 1, ...)`` for broadcasting over an NCHW tensor."""
    return np.asarray(values, _F32).reshape((1, -1) + (1,) * (rank - 2))


def _u1_weights(packed: np.ndarray, channels: int) -> ov.Output:
    """binmx packed weights ``(F, kh, kw, ceil(C/64))`` int64 (bit ``c % 64`` of word
    ``c // 64`` set means -1) -> OpenVINO u1 constant ``(F, C, kh, kw)`` (1 means +1),
    bytes LSB-first as OpenVINO's CPU plugin reads them."""
    f, kh, kw, words = packed.shape
    as_bytes = np.ascontiguousarray(packed).view(np.uint8).reshape(f, kh, kw, words * 8)
    bits = np.unpackbits(as_bytes, axis=-1, bitorder="little")[..., :channels]  # 1 = -1
    plus = (1 - bits).transpose(0, 3, 1, 2)  # (F, C, kh, kw), 1 = +1
    tensor = ov.Tensor(ov.Type.u1, ov.Shape(list(plus.shape)))
    tensor.data[...] = np.packbits(plus.reshape(-1), bitorder="little")
    return ov.op.Constant(tensor).output(0)


def _fq(
    x: ov.Output, threshold: np.ndarray, low: np.ndarray, high: np.ndarray, *, fusable: bool
) -> ov.Output:
    """FakeQuantize(levels=2): ``low`` where ``x <= threshold``, else ``high``. ``fusable``:
    input_low and input_high are two constants (the CPU plugin fuses such a binarization into
    the BinaryConvolution that produces ``x``, u1 output); otherwise one shared constant, which
    keeps it a node of its own (the plugin fuses only FakeQuantizes whose constant inputs have
    no other reader)."""
    t_low = _const(threshold)
    t_high = _const(threshold) if fusable else t_low
    return ops.fake_quantize(x, t_low, t_high, _const(low), _const(high), 2).output(0)


def _sign_bits(
    x: ov.Output, scale: np.ndarray | None, shift: np.ndarray | None, *, fusable: bool = True
) -> ov.Output:
    """{0, 1} tensor of ``[x * scale + shift >= 0]`` per channel (``[x >= 0]`` without scale),
    as a FakeQuantize with the per-channel threshold ``-shift / scale`` (OpenVINO's binary
    models' form). FakeQuantize sends ``v <= t`` to its low output, so ``t`` is nudged one ulp
    down where the low output is -1: ``x == -shift / scale`` then gives +1 as in binmx. Without
    scale the threshold is the largest float below 0 (only a negative denormal x differs from
    binmx, which gives -1 there)."""
    if scale is None:
        below_zero = np.float32(-np.finfo(_F32).smallest_subnormal)
        return _fq(x, np.array(below_zero), np.array(_F32(0)), np.array(_F32(1)), fusable=fusable)
    scale = np.asarray(scale, _F32)
    shift = np.asarray(shift, _F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (-shift / scale).astype(_F32)
    positive = scale > 0
    negative = scale < 0
    # s > 0: y >= 0 <=> x >= t: FakeQuantize low (0) for x <= nextafter(t, -inf).
    # s < 0: y >= 0 <=> x <= t: low output 1 for x <= t, high 0 above.
    # s == 0 (or NaN): y = shift, a constant sign: a threshold no finite x passes (-max float
    # for +1, +max float for -1). Equal low and high outputs would say the same, but the CPU
    # plugin's binarization reads only the high output (measured: wrong bits).
    big = np.finfo(_F32).max
    constant = np.where(shift >= 0, -big, big)
    threshold = np.where(positive, np.nextafter(t, _F32(-np.inf)), np.where(negative, t, constant))
    low = np.where(negative, 1, 0).astype(_F32)
    high = np.where(negative, 0, 1).astype(_F32)
    return _fq(
        x,
        _per_channel(threshold.astype(_F32)),
        _per_channel(low),
        _per_channel(high),
        fusable=fusable,
    )


# ----------------------------------------------------------------------------- translation
class _Value:
    """A node's output: a float tensor or a {0, 1} sign tensor (``bits``)."""

    __slots__ = ("out", "bits", "residual_conv")

    def __init__(self, out: ov.Output, *, bits: bool = False, residual_conv: bool = False):
        self.out = out
        self.bits = bits
        self.residual_conv = residual_conv


class _Builder:
    def __init__(self, graph: dict, params: dict[str, np.ndarray], input_shape, shared: bool):
        self.nodes = graph["nodes"]
        self.heads = graph["heads"]
        self.params = params
        self.input_shape = tuple(int(v) for v in input_shape)
        self.shared = shared
        self.values: dict[int, _Value | None] = {}
        self.parameter: ov.Node | None = None
        self._inputs: Callable[[str, dict[str, str]], list[str]] | None = None

    # -- helpers
    def fail(self, nid: int, what: str) -> ValueError:
        node = self.nodes[nid]
        return ValueError(f"node {node['name']!r} (op {node['op']}): {what}")

    def op_inputs(self, op: str, attrs: dict[str, str]) -> list[str]:
        if self._inputs is None:
            from binmx.ops import op_inputs  # the one definition of the input order

            self._inputs = op_inputs
        return self._inputs(op, attrs)

    def named_inputs(self, nid: int) -> dict[str, int]:
        node = self.nodes[nid]
        names = self.op_inputs(node["op"], node.get("attrs", {}))
        entries = node["inputs"]
        if len(entries) != len(names):
            raise self.fail(nid, f"has {len(entries)} inputs, its attributes give {names}")
        return {name: entry[0] for name, entry in zip(names, entries, strict=True)}

    def param(self, nid: int) -> np.ndarray:
        node = self.nodes[nid]
        if node["op"] != "null" or node["name"] not in self.params:
            raise ValueError(f"expected {node['name']!r} to be a parameter in the .params file")
        return self.params[node["name"]]

    def value(self, nid: int) -> _Value:
        value = self.values[nid]
        if value is None:
            raise self.fail(nid, "is a parameter where a tensor is expected")
        return value

    def float_in(self, nid: int, src: int) -> ov.Output:
        value = self.value(src)
        if value.bits:
            raise self.fail(nid, "reads a packed (out_packed) output; only QConvolution can")
        return value.out

    # -- the walk
    def build(self) -> ov.Model:
        for nid, node in enumerate(self.nodes):
            self.values[nid] = self.translate(nid, node)
        if len(self.heads) != 1:
            raise ValueError(f"expected one graph output, got {len(self.heads)}")
        head = self.heads[0][0]
        out = self.value(head)
        if out.bits:
            raise self.fail(head, "the graph output is a packed tensor")
        if self.parameter is None:
            raise ValueError("the graph has no 'data' input")
        result = ops.result(out.out)
        return ov.Model([result], [self.parameter], "binmx_binary_openvino")

    def translate(self, nid: int, node: dict) -> _Value | None:
        op = node["op"]
        attrs = node.get("attrs", {})
        ins = [e[0] for e in node["inputs"]]
        if op == "null":
            if node["name"] == "data":
                self.parameter = ops.parameter(list(self.input_shape), _F32, name="data")
                return _Value(self.parameter.output(0))
            return None  # a weight (read through self.param) or the softmax label
        handler = getattr(self, "op_" + op, None)
        if handler is None:
            raise self.fail(nid, "operator not supported by the OpenVINO baseline")
        value = handler(nid, attrs, ins)
        value.out.get_node().set_friendly_name(node["name"] + ("/sign" if value.bits else ""))
        return value

    # -- operators
    def op_QChannelAffine(self, nid, attrs, ins) -> _Value:
        x = self.float_in(nid, ins[0])
        scale, shift = self.param(ins[1]), self.param(ins[2])
        rank = len(x.get_partial_shape())
        y = ops.add(
            ops.multiply(x, _const(_per_channel(scale, rank))), _const(_per_channel(shift, rank))
        )
        if _bool(attrs, "relu"):
            y = ops.relu(y)
        return _Value(y.output(0))

    def op_Convolution(self, nid, attrs, ins) -> _Value:
        x = self.float_in(nid, ins[0])
        kernel = _tuple(attrs, "kernel", ())
        if len(kernel) != 2:
            raise self.fail(nid, f"attribute kernel={kernel}: only 2-d convolutions")
        w = self.param(ins[1]).astype(_F32)
        stride = _spatial(attrs, "stride", 1)
        pad = _spatial(attrs, "pad", 0)
        dilate = _spatial(attrs, "dilate", 1)
        groups = _int(attrs, "num_group", 1)
        if groups == 1:
            y = ops.convolution(x, _const(w), stride, pad, pad, dilate)
        else:
            f = w.shape[0]
            gw = w.reshape((groups, f // groups) + w.shape[1:])
            y = ops.group_convolution(x, _const(gw), stride, pad, pad, dilate)
        if not _bool(attrs, "no_bias"):
            y = ops.add(y, _const(_per_channel(self.param(ins[2]))))
        return _Value(y.output(0))

    def op_Activation(self, nid, attrs, ins) -> _Value:
        kind = attrs.get("act_type", "")
        if kind != "relu":
            raise self.fail(nid, f"attribute act_type={kind!r} not supported (relu only)")
        return _Value(ops.relu(self.float_in(nid, ins[0])).output(0))

    def op_relu(self, nid, attrs, ins) -> _Value:
        return _Value(ops.relu(self.float_in(nid, ins[0])).output(0))

    def op_Pooling(self, nid, attrs, ins) -> _Value:
        x = self.float_in(nid, ins[0])
        kind = attrs.get("pool_type", "max")
        if kind not in ("max", "avg"):
            raise self.fail(nid, f"attribute pool_type={kind!r} not supported (max, avg)")
        if _bool(attrs, "global_pool"):
            axes = _const(np.array([2, 3], np.int64))
            reduce = ops.reduce_max if kind == "max" else ops.reduce_mean
            return _Value(reduce(x, axes, True).output(0))
        kernel = _tuple(attrs, "kernel", ())
        stride = _spatial(attrs, "stride", 1)
        pad = _spatial(attrs, "pad", 0)
        convention = attrs.get("pooling_convention", "valid")
        if convention not in ("valid", "full"):
            raise self.fail(nid, f"attribute pooling_convention={convention!r} not supported")
        rounding = "floor" if convention == "valid" else "ceil"
        if kind == "max":
            y = opset1.max_pool(x, stride, pad, pad, kernel, rounding)
        else:
            exclude = not _bool(attrs, "count_include_pad", True)
            y = opset1.avg_pool(x, stride, pad, pad, kernel, exclude, rounding)
        return _Value(y.output(0))

    def op_transpose(self, nid, attrs, ins) -> _Value:
        axes = _tuple(attrs, "axes", ())
        x = self.float_in(nid, ins[0])
        if not axes:
            axes = list(range(len(x.get_partial_shape())))[::-1]
        return _Value(ops.transpose(x, _const(np.array(axes, np.int64))).output(0))

    def op_QNHWCToNCHW(self, nid, attrs, ins) -> _Value:
        x = self.float_in(nid, ins[0])
        return _Value(ops.transpose(x, _const(np.array([0, 3, 1, 2], np.int64))).output(0))

    def op_Flatten(self, nid, attrs, ins) -> _Value:
        x = self.float_in(nid, ins[0])
        return _Value(ops.reshape(x, _const(np.array([0, -1], np.int64)), True).output(0))

    def op_FullyConnected(self, nid, attrs, ins) -> _Value:
        x = self.float_in(nid, ins[0])
        if not _bool(attrs, "flatten", True):
            raise self.fail(nid, "attribute flatten=False not supported")
        if len(x.get_partial_shape()) != 2:
            x = ops.reshape(x, _const(np.array([0, -1], np.int64)), True).output(0)
        y = ops.matmul(x, _const(self.param(ins[1]).astype(_F32)), False, True)
        if not _bool(attrs, "no_bias"):
            y = ops.add(y, _const(self.param(ins[2]).astype(_F32).reshape(1, -1)))
        return _Value(y.output(0))

    def op_SoftmaxOutput(self, nid, attrs, ins) -> _Value:
        x = self.float_in(nid, ins[0])
        if len(x.get_partial_shape()) != 2:
            raise self.fail(nid, "only 2-d inputs (N, classes) supported")
        return _Value(ops.softmax(x, 1).output(0))

    def op_softmax(self, nid, attrs, ins) -> _Value:
        return _Value(ops.softmax(self.float_in(nid, ins[0]), _int(attrs, "axis", -1)).output(0))

    def op_QConvolution(self, nid, attrs, ins) -> _Value:
        if _int(attrs, "act_bit", 1) != 1 or _int(attrs, "weight_bit", 1) != 1:
            raise self.fail(nid, "attributes act_bit/weight_bit: only 1-bit layers")
        if not _bool(attrs, "binarized_weights_only"):
            raise self.fail(nid, "attribute binarized_weights_only=False: convert the model first")
        if _int(attrs, "num_group", 1) != 1:
            raise self.fail(nid, "attribute num_group: OpenVINO has no grouped BinaryConvolution")
        named = self.named_inputs(nid)
        kernel = _tuple(attrs, "kernel", ())
        if len(kernel) != 2:
            raise self.fail(nid, f"attribute kernel={kernel}: only 2-d convolutions")
        src = self.value(named["data"])
        if _bool(attrs, "in_packed"):
            if not src.bits:
                raise self.fail(nid, "in_packed=True but its data input is not packed")
            bits = src.out
            channels = _int(attrs, "in_channels", 0)
        else:
            if src.bits:
                raise self.fail(nid, "reads a packed output without in_packed=True")
            scale = shift = None
            if _bool(attrs, "input_affine"):
                scale = self.param(named["in_scale"])
                shift = self.param(named["in_shift"])
            bits = _sign_bits(
                src.out, scale, shift, fusable=not (self.shared and src.residual_conv)
            )
            channels = int(src.out.get_partial_shape()[1].get_length())
        if channels % 8:
            raise self.fail(
                nid,
                f"{channels} input channels: OpenVINO 2026.4.1's CPU "
                "BinaryConvolution is wrong unless channels % 8 == 0",
            )
        pad_value = _int(attrs, "pad_value", 0)
        if pad_value not in (-1, 0, 1):
            raise self.fail(nid, f"attribute pad_value={pad_value} (expected -1, 0 or 1)")
        weights = self.param(named["weight"])
        if weights.dtype != np.int64 or weights.ndim != 4:
            raise self.fail(
                nid,
                f"weight of dtype {weights.dtype} and shape {weights.shape}: "
                "expected packed int64 (F, kh, kw, words)",
            )
        pad = _spatial(attrs, "pad", 0)
        if not _bool(attrs, "in_packed"):
            bits.get_node().set_friendly_name(self.nodes[nid]["name"] + "/in_sign")
        y: Any = opset1.binary_convolution(
            bits,
            _u1_weights(weights, channels),
            _spatial(attrs, "stride", 1),
            pad,
            pad,
            _spatial(attrs, "dilate", 1),
            "xnor-popcount",
            float(pad_value),
        )
        y.set_friendly_name(self.nodes[nid]["name"] + "/bconv")
        if "alpha" in named:
            y = ops.multiply(y, _const(_per_channel(self.param(named["alpha"]))))
        if "bias" in named:
            y = ops.add(y, _const(_per_channel(self.param(named["bias"]))))
        residual = "residual" in named
        if residual:
            y = ops.add(y, self.float_in(nid, named["residual"]))
        if _bool(attrs, "out_packed"):
            out_bits = _sign_bits(
                y.output(0),
                self.param(named["out_scale"]),
                self.param(named["out_shift"]),
                fusable=not (self.shared and residual),
            )
            return _Value(out_bits, bits=True)
        return _Value(y.output(0), residual_conv=residual)


def build_openvino_graph(
    graph: dict,
    params: dict[str, np.ndarray],
    input_shape: tuple[int, ...],
    *,
    shared_threshold_after_residual: bool = True,
) -> ov.Model:
    """The OpenVINO model of a parsed symbol JSON (``nodes``/``heads``) and its params
    (``{name: ndarray}``, no ``arg:``/``aux:`` prefix). See the module docstring."""
    if len(input_shape) != 4:
        raise ValueError(f"Expected `input_shape` to be (N, C, H, W), got {input_shape!r}")
    return _Builder(graph, params, input_shape, shared_threshold_after_residual).build()


def build_openvino_model(
    symbol_json_path: str,
    params_path: str,
    input_shape: tuple[int, ...],
    *,
    shared_threshold_after_residual: bool = True,
) -> ov.Model:
    """OpenVINO model of a binmx-converted (folded) network: ``PREFIX-symbol.json`` and
    ``PREFIX-NNNN.params`` for a fixed ``input_shape`` (N, C, H, W)."""
    with open(symbol_json_path, encoding="utf-8") as f:
        graph = json.load(f)
    if not isinstance(graph, dict) or "nodes" not in graph or "heads" not in graph:
        raise ValueError(f"Expected {symbol_json_path!r} to be an MXNet symbol JSON")
    return build_openvino_graph(
        graph,
        load_params(params_path),
        input_shape,
        shared_threshold_after_residual=shared_threshold_after_residual,
    )


# ----------------------------------------------------------------------------- compile / time
def compile_openvino(model: ov.Model, threads: int, *, perf_count: bool = False):
    """``model`` compiled for the CPU: ``threads`` inference threads, latency hint, one
    stream, f32 precision (no bf16 down-conversion, so outputs are comparable)."""
    config = {
        "INFERENCE_NUM_THREADS": int(threads),
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        "INFERENCE_PRECISION_HINT": "f32",
        "PERF_COUNT": bool(perf_count),
    }
    return ov.Core().compile_model(model, "CPU", config)


def _request(compiled_model, x: np.ndarray):
    request = compiled_model.create_infer_request()
    request.set_input_tensor(ov.Tensor(np.ascontiguousarray(x, dtype=_F32), shared_memory=True))
    return request


def time_openvino(compiled_model, x: np.ndarray, repeat: int, *, warmup: int = 3) -> list[float]:
    """Milliseconds of each of ``repeat`` synchronous inferences of ``x`` (after ``warmup``)."""
    request = _request(compiled_model, x)
    for _ in range(warmup):
        request.infer()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        request.infer()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def run_openvino(compiled_model, x: np.ndarray) -> np.ndarray:
    request = _request(compiled_model, x)
    request.infer()
    return np.array(request.get_output_tensor().data, copy=True)


def openvino_profile(compiled_model, x: np.ndarray, repeat: int = 20) -> list[dict]:
    """Per executed node (compiled with ``perf_count=True``): name, layer type, kernel, median
    and minimum ms over ``repeat`` runs; nodes that did not run (fused away) are left out."""
    request = _request(compiled_model, x)
    request.infer()
    samples: dict[str, list[float]] = {}
    info: dict[str, tuple[str, str]] = {}
    for _ in range(repeat):
        request.infer()
        for p in request.profiling_info:
            if str(p.status).endswith("EXECUTED"):
                samples.setdefault(p.node_name, []).append(p.real_time.total_seconds() * 1e3)
                info[p.node_name] = (p.node_type, p.exec_type)
    return [
        {
            "name": n,
            "type": info[n][0],
            "exec": info[n][1],
            "ms": statistics.median(v),
            "min_ms": min(v),
        }
        for n, v in samples.items()
    ]


# ----------------------------------------------------------------------------- benchmark
def _cpu_name() -> str:
    """Model name, core count and the SIMD flags that matter to both engines."""
    name, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    simd = [f for f in ("avx2", "avx512f", "avx512bw", "avx512_vpopcntdq") if f in flags]
    return f"{name} ({os.cpu_count()} cores visible; {' '.join(simd) or 'no AVX2'})"


def _make_resnet18(prefix: str, image: int, classes: int, width: int) -> None:
    """Random-weight binary ResNet-18 (non-trivial BatchNorm statistics), converted with
    ``fold=True``, saved as ``PREFIX-symbol.json`` / ``PREFIX-0001.params``."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    import runtime_cases as rc
    from binmx import models
    from binmx.converter import convert

    shape = (1, 3, image, image)
    sym = models.resnet(depth=18, num_classes=classes, image_shape=shape[1:], width=width)
    args, aux = rc.random_params(sym, shape, seed=0)
    sym, args, aux = convert(sym, args, aux, fold=True)
    rc.save(prefix, sym, args, aux)


def logits_model(prefix: str, epoch: int = 1) -> str:
    """A copy of ``PREFIX-symbol.json`` whose output is the input of its final softmax (the
    logits; a saturated softmax hides differences), beside a link to the same params. Returns
    the new prefix ``PREFIX_logits``."""
    with open(f"{prefix}-symbol.json", encoding="utf-8") as f:
        graph = json.load(f)
    head = graph["heads"][0][0]
    if graph["nodes"][head]["op"] not in ("SoftmaxOutput", "softmax"):
        raise ValueError(f"{prefix}-symbol.json does not end in a softmax")
    graph["heads"] = [graph["nodes"][head]["inputs"][0]]
    out = prefix + "_logits"
    with open(f"{out}-symbol.json", "w", encoding="utf-8") as f:
        json.dump(graph, f)
    link = f"{out}-{epoch:04d}.params"
    if os.path.lexists(link):
        os.remove(link)
    os.symlink(os.path.abspath(f"{prefix}-{epoch:04d}.params"), link)
    return out


def _compare(ov_out: np.ndarray, rt_out: np.ndarray) -> tuple[float, float, bool]:
    diff = float(np.abs(ov_out - rt_out).max())
    scale = float(np.abs(rt_out).max())
    same = bool((ov_out.argmax(axis=-1) == rt_out.argmax(axis=-1)).all())
    return diff, scale, same


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model",
        help="PREFIX of a converted, folded model (default: make "
        "the random-weight binary ResNet-18 in a temporary directory)",
    )
    parser.add_argument("--epoch", type=int, default=1)
    parser.add_argument("--image", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=200, help="timed runs per engine")
    parser.add_argument("--rounds", type=int, default=10, help="alternations between engines")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--quick", action="store_true", help="repeat 20, rounds 2")
    parser.add_argument("--no-profile", action="store_true")
    a = parser.parse_args(argv)
    if a.quick:
        a.repeat, a.rounds = 20, 2
    import binmx_runtime

    tmp = None
    prefix = a.model
    if prefix is None:
        tmp = tempfile.TemporaryDirectory()
        prefix = os.path.join(tmp.name, "r18")
        _make_resnet18(prefix, a.image, 1000, 64)
    shape = (1, 3, a.image, a.image)
    t0 = time.perf_counter()
    model = build_openvino_model(f"{prefix}-symbol.json", f"{prefix}-{a.epoch:04d}.params", shape)
    build_ms = (time.perf_counter() - t0) * 1e3
    x = np.random.default_rng(1).standard_normal(shape).astype(_F32)
    print(
        f"CPU: {_cpu_name()}; OpenVINO {ov.get_version()}; binmx_runtime "
        f"{binmx_runtime.version()}; model {prefix}; input {shape}"
    )
    print(f"OpenVINO graph built in {build_ms:.0f} ms")
    with tempfile.TemporaryDirectory() as work:
        base = os.path.join(work, "m")
        for suffix in ("-symbol.json", f"-{a.epoch:04d}.params"):
            os.symlink(os.path.abspath(prefix + suffix), base + suffix)
        lp = logits_model(base, a.epoch)
        lm = build_openvino_model(f"{lp}-symbol.json", f"{lp}-{a.epoch:04d}.params", shape)
        got = run_openvino(compile_openvino(lm, 1), x)
        want = binmx_runtime.load(lp, a.epoch, input_shape=shape, threads=1).run(x)
    diff, scale, same = _compare(got, want)
    print(
        f"logits check (1 thread): max|OpenVINO - binmx_runtime| = {diff:.3g} (max|logit| "
        f"{scale:.3g}, relative {diff / max(scale, 1e-30):.3g}); argmax "
        f"{'agrees' if same else 'DIFFERS'}"
    )

    per_run = max(1, a.repeat // a.rounds)
    for threads in [int(t) for t in a.threads.split(",")]:
        compiled = compile_openvino(model, threads)
        keys = ("INFERENCE_NUM_THREADS", "NUM_STREAMS", "PERFORMANCE_HINT", "ENABLE_CPU_PINNING")
        print(
            f"[{threads} thread(s)] OpenVINO CPU config: "
            + ", ".join(f"{k}={compiled.get_property(k)}" for k in keys)
        )
        rt = binmx_runtime.load(prefix, a.epoch, input_shape=shape, threads=threads)
        ov_out, rt_out = run_openvino(compiled, x), rt.run(x)
        diff, scale, same = _compare(ov_out, rt_out)
        print(
            f"[{threads} thread(s)] softmax output check: "
            f"max|OpenVINO - binmx_runtime| = {diff:.3g} "
            f"(max|output| {scale:.3g}, relative {diff / max(scale, 1e-30):.3g}); argmax "
            f"{'agrees' if same else 'DIFFERS'} ({int(ov_out.argmax())} vs "
            f"{int(rt_out.argmax())})"
        )
        ov_ms: list[float] = []
        rt_ms: list[float] = []
        for _ in range(a.rounds):  # alternate, so drifts in machine load hit both engines
            ov_ms += time_openvino(compiled, x, per_run)
            for _ in range(3):
                rt.run(x)
            for _ in range(per_run):
                t1 = time.perf_counter()
                rt.run(x)
                rt_ms.append((time.perf_counter() - t1) * 1e3)
        ov_med, rt_med = statistics.median(ov_ms), statistics.median(rt_ms)
        print(
            f"[{threads} thread(s)] median of {len(ov_ms)}: OpenVINO {ov_med:.3f} ms "
            f"(min {min(ov_ms):.3f}), binmx_runtime {rt_med:.3f} ms (min {min(rt_ms):.3f}); "
            f"time OpenVINO / binmx_runtime = {ov_med / rt_med:.2f} (minima "
            f"{min(ov_ms) / min(rt_ms):.2f}; > 1: binmx_runtime faster)"
        )
        if not a.no_profile:
            _print_profile(model, x, threads)
            _print_runtime_profile(rt, x, threads)
    if tmp is not None:
        tmp.cleanup()
    return 0


def _print_profile(model: ov.Model, x: np.ndarray, threads: int) -> None:
    rows = openvino_profile(compile_openvino(model, threads, perf_count=True), x, repeat=50)
    print(
        f"[{threads} thread(s)] OpenVINO per-layer profile (PERF_COUNT, 50 runs; median / min "
        f"ms; sums {sum(r['ms'] for r in rows):.3f} / {sum(r['min_ms'] for r in rows):.3f}):"
    )
    for r in rows:
        if r["ms"] > 0:
            print(
                f"    {r['name'][:40]:40s} {r['type']:18s} {r['exec']:20s} "
                f"{r['ms']:7.3f} {r['min_ms']:7.3f}"
            )
    by_type: dict[str, list[dict]] = {}
    for r in rows:
        by_type.setdefault(r["type"], []).append(r)
    for kind, group in sorted(by_type.items(), key=lambda kv: -sum(r["ms"] for r in kv[1])):
        med = [r["ms"] for r in group]
        print(
            f"  {kind:18s} x{len(group):<3d} sum {sum(med):7.3f} ms (max {max(med):.3f}); "
            f"sum of minima {sum(r['min_ms'] for r in group):7.3f} ms"
        )
    first_binary = next(
        (i for i, r in enumerate(rows) if r["type"] in ("FakeQuantize", "BinaryConvolution")),
        len(rows),
    )
    stem = rows[:first_binary]
    print(
        f"  float stem ({', '.join(r['type'] for r in stem)}): "
        f"{sum(r['ms'] for r in stem):.3f} ms; sum of minima {sum(r['min_ms'] for r in stem):.3f}"
    )


def _print_runtime_profile(rt, x: np.ndarray, threads: int) -> None:
    rows = rt.profile(x, repeat=50)
    binary = [r["ms"] for r in rows if r["op"] in ("QConvolution", "QFullyConnected")]
    first = next((i for i, r in enumerate(rows) if r["op"] == "QConvolution"), len(rows))
    stem = rows[:first]
    print(
        f"[{threads} thread(s)] binmx_runtime profile (median of 50; sum "
        f"{sum(r['ms'] for r in rows):.3f} ms): {len(binary)} binary layers sum "
        f"{sum(binary):.3f} ms (max {max(binary, default=0):.3f}); float stem "
        f"({', '.join(r['name'] for r in stem)}): {sum(r['ms'] for r in stem):.3f} ms"
    )


if __name__ == "__main__":
    sys.exit(main())
