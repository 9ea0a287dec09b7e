"""The fold's oneDNN layout hand-overs: passes 7-9 of :data:`binmx.fold.PASSES`.

MXNet's oneDNN (MKLDNN) operators may leave their outputs in a blocked layout, and MXNet hands
an extension operator its inputs in the plain (NCHW) layout, reordering a blocked array on
every forward, slowly (0.34 ms for 64x56x56, 4.2 ms for 64x112x112; its reorder to plain NHWC
takes 0.056 / 0.31 ms, ``benchmarks/investigations/bench_reorder.py``). These passes place the
work on whichever side of that boundary is fast (docs/design.md §5):

7. ``bn_to_channel_affine``: an inference BatchNorm [-> relu] on a plain-layout array becomes
   binmx's ``QChannelAffine`` [relu].
8. ``small_bn_to_conv``: a BatchNorm over at most 4 channels left on a oneDNN output becomes a
   1x1 ``Convolution`` with a diagonal weight.
9. ``nhwc_handover``: a oneDNN output read by binmx convolutions reaches them through one
   ``transpose`` to NHWC and ``QNHWCToNCHW``; other shared reads get one plain copy.

They are only useful on a oneDNN build of MXNet on the CPU; ``binmx.fold(...,
onednn_layout=False)`` skips all three. Each is exact (pass 8 rounds as ``x * scale + shift``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from binmx._graph import BINARY_OPS, Graph, ModelGraph, bool_attr, op_inputs, parse_ints

# binmx operators: their outputs are plain (NCHW) arrays, never in oneDNN's blocked layout.
_PLAIN_OUTPUT = (*BINARY_OPS, "QActivation", "QNHWCToNCHW", "QChannelAffine")

# MXNet operators that run on oneDNN and leave their output in its blocked layout (given a
# blocked input, or always for Convolution): what pass 9 hands a binmx convolution as NHWC.
_ONEDNN_BLOCKED = ("Convolution", "Pooling", "BatchNorm", "Activation", "elemwise_add", "add_n")


def bn_to_channel_affine(model: ModelGraph) -> None:
    """Pass 7. An inference BatchNorm whose input is a plain-layout array (the output of a
    binmx operator, or the graph's data input), and the relu that is its only reader if there
    is one, become one binmx ``QChannelAffine(data, scale, shift, relu=...)``: ``x * scale +
    shift`` per channel in one pass (then ``max(., 0)``). MXNet's BatchNorm on the plain arrays
    extension operators return is slow (ResNet-18's final 512x7x7 BatchNorm + relu: about
    0.1 ms, 1 thread), and so is its BatchNorm over the 3 channels of an input image.
    BatchNorms that read a oneDNN output stay with MXNet (pass 8 for small ones): an extension
    operator would get that array through MXNet's slow reorder."""
    graph = model.graph
    consumers = graph.consumers()
    heads = graph.head_ids()
    for nid in graph.reachable():
        bn = graph.nodes[nid]
        if bn["op"] != "BatchNorm":
            continue
        src = graph.nodes[bn["inputs"][0][0]]
        is_param = src["name"] in model.args or src["name"] in model.aux
        if not (src["op"] in _PLAIN_OUTPUT or (src["op"] == "null" and not is_param)):
            continue
        affine = model.batchnorm_affine(nid)
        if affine is None:
            continue
        relu_id = None
        if nid not in heads and len(consumers[nid]) == 1:
            r = graph.nodes[consumers[nid][0]]
            if r["op"] == "relu" or (
                r["op"] == "Activation" and r.get("attrs", {}).get("act_type") == "relu"
            ):
                relu_id = consumers[nid][0]
        inputs = [list(bn["inputs"][0])]
        for suffix, value in zip(("scale", "shift"), affine, strict=True):
            inputs.append(model.add_param(f"{bn['name']}_{suffix}", value))
        graph.replace(nid, "QChannelAffine", {"relu": str(relu_id is not None)}, inputs)
        if relu_id is not None:
            graph.redirect(relu_id, nid)
            consumers = graph.consumers()
            heads = graph.head_ids()


def small_bn_to_conv(model: ModelGraph) -> None:
    """Pass 8. A BatchNorm left over (in inference mode, over at most 4 channels of a 4-d
    tensor; after pass 7 only those reading a oneDNN output) becomes a 1x1 ``Convolution``
    whose weight is the diagonal matrix of its scales and whose bias is its shifts: the same
    per-channel affine map, rounded as ``x * scale + shift``. oneDNN runs a BatchNorm over 3
    channels with plain C++ loops (about 0.2 ms on a 224x224 image, 1 thread) and the
    convolution with its JIT kernels (about 0.06 ms). The off-diagonal weights are 0, so a
    non-finite input value makes every channel of its pixel NaN instead of one (the unfolded
    model's output is not finite there either)."""
    graph = model.graph
    consumers = graph.consumers()
    for nid in graph.reachable():
        bn = graph.nodes[nid]
        if bn["op"] != "BatchNorm" or _ndim(graph, nid, consumers, model.shapes) != 4:
            continue
        affine = model.batchnorm_affine(nid)
        if affine is None or affine[0].shape[0] > 4:
            continue
        scale, shift = affine
        channels = scale.shape[0]
        weight = np.diag(scale).reshape(channels, channels, 1, 1).astype(np.float32)
        inputs = [
            list(bn["inputs"][0]),
            model.add_param(f"{bn['name']}_diag_weight", weight),
            model.add_param(f"{bn['name']}_diag_bias", shift),
        ]
        attrs = {"kernel": "(1, 1)", "num_filter": str(channels), "no_bias": "False"}
        graph.replace(nid, "Convolution", attrs, inputs)


def nhwc_handover(model: ModelGraph) -> None:
    """Pass 9. Where binmx convolutions read the output of a oneDNN operator (Convolution,
    Pooling, BatchNorm, Activation, elemwise_add, add_n; or of any operator when two or more
    binmx inputs read it), the graph gets ``transpose(axes=(0, 2, 3, 1))`` and binmx's
    ``QNHWCToNCHW`` in between, once for all of them: exact copies. When other binmx operators
    read it too, two or more readers share one identity ``Reshape`` (``shape=(-2,)``) instead,
    which does the NCHW reorder once."""
    graph = model.graph
    binmx_ops = (*BINARY_OPS, "QActivation")
    binmx_reads: dict[int, list[tuple[int, int]]] = {}  # node id -> (reader id, input index)
    for r in graph.reachable():
        if graph.nodes[r]["op"] in binmx_ops:
            for k, e in enumerate(graph.nodes[r]["inputs"]):
                if e[1] == 0:
                    binmx_reads.setdefault(e[0], []).append((r, k))
    for nid, readers in binmx_reads.items():
        node = graph.nodes[nid]
        if node["op"] in ("null", *_PLAIN_OUTPUT) or _is_reshape_barrier(node):
            continue
        convs_only = all(_reads_nchw(graph.nodes[r], k) for r, k in readers)
        if convs_only and (len(readers) >= 2 or node["op"] in _ONEDNN_BLOCKED):
            # oneDNN's reorder to plain NHWC, then binmx's NHWC -> NCHW (4-d data only).
            tid = graph.add_node(
                "transpose", f"{node['name']}_nhwc", {"axes": "(0, 2, 3, 1)"}, [[nid, 0, 0]]
            )
            bid = graph.add_node("QNHWCToNCHW", f"{node['name']}_nchw", {}, [[tid, 0, 0]])
        elif len(readers) >= 2:
            # shape -2: copy every input dimension
            bid = graph.add_node(
                "Reshape", f"{node['name']}_plain", {"shape": "(-2,)"}, [[nid, 0, 0]]
            )
        else:
            continue
        for r, k in readers:
            graph.nodes[r]["inputs"][k] = [bid, 0, 0]


# (name, function, the binmx.fold switches besides `onednn_layout`), in the order they run.
PASSES: list[tuple[str, Callable[[ModelGraph], None], tuple[str, ...]]] = [
    ("bn_to_channel_affine", bn_to_channel_affine, ("channel_affine",)),
    ("small_bn_to_conv", small_bn_to_conv, ()),
    ("nhwc_handover", nhwc_handover, ()),
]


def _reads_nchw(reader: dict[str, Any], k: int) -> bool:
    """Whether input k of a binmx node is a QConvolution's float NCHW data or residual (what
    the NHWC hand-over may feed; not a parameter, not packed words)."""
    if reader["op"] != "QConvolution":
        return False
    attrs = reader.get("attrs", {})
    names = op_inputs(reader["op"], attrs)
    if k >= len(names):
        return False
    return names[k] == "residual" or (names[k] == "data" and not bool_attr(attrs, "in_packed"))


def _is_reshape_barrier(node: dict[str, Any]) -> bool:
    return node["op"] == "Reshape" and node.get("attrs", {}).get("shape") == "(-2,)"


def _ndim(
    graph: Graph, nid: int, consumers: dict[int, list[int]], shapes: dict[str, tuple[int, ...]]
) -> int | None:
    """Rank of a node's output: from the inferred shapes, else 4 when a 2-d Convolution
    reads it; None when unknown."""
    shape = shapes.get(graph.nodes[nid]["name"])
    if shape is not None:
        return len(shape)
    for r in consumers[nid]:
        reader = graph.nodes[r]
        kernel = parse_ints(reader.get("attrs", {}).get("kernel"))
        if reader["op"] == "Convolution" and kernel is not None and len(kernel) == 2:
            return 4
    return None
