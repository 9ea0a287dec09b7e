"""Inference-time folding of BatchNorm into binmx's binary layers.

Rewrites, all exact up to float rounding (docs/design.md §5):

1. BatchNorm -> sign. A 1-bit ``QConvolution`` / ``QFullyConnected`` takes the sign of its
   input. When that input is a BatchNorm (in inference mode, through any number of
   ``QActivation`` layers with ``act_bit=1`` or ``backward_only=True``, and ``Flatten`` for
   a fully connected layer), the BatchNorm is a per-channel affine map:

       bn(x)_c = scale_c * x_c + shift_c,   scale_c = gamma_c / sqrt(var_c + eps),
                                            shift_c = beta_c - mean_c * scale_c

   (``gamma_c = 1`` when ``fix_gamma``), so ``sgn(bn(x)) = sgn(x * scale + shift)``. The layer
   gets ``input_affine=True`` and the inputs ``in_scale`` / ``in_shift``; its packing pass
   computes the bits directly from the un-normalised input, and the BatchNorm and QActivation
   nodes disappear when nothing else reads them. A sign can differ from the unfolded model
   only where the BatchNorm output is within float rounding of 0.

2. binary layer -> BatchNorm. A converted (``binarized_weights_only``) 1-bit layer computes
   ``y = alpha_f * dot + bias_f``; a BatchNorm that is its only reader gives
   ``scale_f * y + shift_f = (scale_f * alpha_f) * dot + (scale_f * bias_f + shift_f)``, so the
   layer takes the folded ``alpha`` and ``bias`` (``scaling_factor=True``, ``no_bias=False``)
   in its fused epilogue and the BatchNorm disappears.

A float ``Convolution`` / ``FullyConnected`` whose only reader is a BatchNorm takes it into its
weights and bias the same way (``W_f * scale_f``, ``b_f * scale_f + shift_f``).

3. A ``QActivation`` (``act_bit=1`` or ``backward_only``) read only by 1-bit layers is dropped:
   those layers take the sign of their input themselves.

4. 1-bit ``QConvolution`` -> ``elemwise_add`` (its only reader, e.g. a residual unit's
   ``conv2 + shortcut``): the add moves into the convolution's epilogue. The layer gets
   ``residual=True`` and the add's other operand as its last input ``residual``, computing
   ``(alpha * dot + bias) + residual`` in float32: bit-identical to the add (float addition is
   commutative), one operator and one pass over the output fewer.

5. A BatchNorm left over (in inference mode, over at most 4 channels of a 4-d tensor that a
   oneDNN operator produced) becomes a 1x1 ``Convolution`` whose weight is the
   diagonal matrix of its scales and whose bias is its shifts: the same per-channel affine map,
   rounded as ``x * scale + shift``. oneDNN runs a BatchNorm over 3 channels with plain C++
   loops (about 0.2 ms on a 224x224 image, 1 thread) and the convolution with its JIT kernels
   (about 0.06 ms). The off-diagonal weights are 0, so a non-finite input value makes every
   channel of its pixel NaN instead of one (the unfolded model's output is not finite there
   either).

6. MXNet hands a binmx operator its inputs in the plain (NCHW) layout. An array that a oneDNN
   operator left in a blocked layout (the max-pool after a float stem) is reordered once for
   every binmx operator that reads it, on every forward, and that reorder to NCHW is slow
   (0.34 ms for 64x56x56, 4.2 ms for 64x112x112), while oneDNN's reorder to plain NHWC is not
   (0.056 / 0.31 ms; ``benchmarks/investigations/bench_reorder.py``). So where binmx
   convolutions read the output of a oneDNN operator (Convolution, Pooling, BatchNorm,
   Activation, elemwise_add, add_n; or of any operator when two or more binmx inputs read it),
   the graph gets ``transpose(axes=(0, 2, 3, 1))`` and binmx's ``QNHWCToNCHW`` in between, once
   for all of them: exact copies. When other binmx operators read it too, two or more readers
   share one identity ``Reshape`` (``shape=(-2,)``) instead, which does the NCHW reorder once.

7. Packed activations. A converted 1-bit ``QConvolution`` (``num_group=1``, no residual) whose
   only reader is the data input of another converted 1-bit ``QConvolution`` with an input
   affine (rewrite 1: the BatchNorm + sign between them, e.g. a residual unit's conv1 ->
   conv2) hands it sign bits instead of floats: the first gets ``out_packed=True`` and the
   second's ``in_scale`` / ``in_shift`` as its ``out_scale`` / ``out_shift``, and writes
   int64 words ``(N, OH, OW, ceil(F/64))``; the second gets ``in_packed=True`` and
   ``in_channels=F`` and loses its input affine. The bits are exactly the ones the second
   layer's packing pass took from the float tensor (bit-identical outputs), without writing,
   reading and re-packing that tensor.

8. An inference BatchNorm whose input is a plain-layout array (the output of a binmx operator,
   or the graph's data input), and the relu that is its only reader if there is one, become
   one binmx ``QChannelAffine(data, scale, shift, relu=...)``: ``x * scale + shift`` per
   channel in one pass (then ``max(., 0)``). MXNet's BatchNorm on the plain arrays extension
   operators return is slow (ResNet-18's final 512x7x7 BatchNorm + relu: about 0.1 ms, 1
   thread), and so is its BatchNorm over the 3 channels of an input image. BatchNorms that
   read a oneDNN output stay with MXNet (rewrite 5 for small ones): an extension operator
   would get that array through MXNet's slow reorder (rewrite 6).

Rewrite 5 therefore only sees BatchNorms that read oneDNN outputs. They run in the order 1, 2,
3, 4, 7, 8, 5, 6.

:func:`fold` never modifies its arguments. It is used by the converter (``--fold``).
"""

from __future__ import annotations

from typing import Any

import mxnet as mx
import numpy as np

from binmx._graph import (
    BINARY_OPS,
    Graph,
    is_binary,
    op_inputs,
    output_shapes,
    parse_ints,
)
from binmx._graph import bool_attr as _true
from binmx._graph import float_attr as _float
from binmx._graph import int_attr as _int

__all__ = ["fold"]

_BINARY = BINARY_OPS
_ADDS = ("elemwise_add", "add_n")  # add_n only with two inputs
_is_binary = is_binary


def _bn_affine(
    node: dict[str, Any], graph: Graph, args: dict[str, Any], aux: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray] | None:
    """(scale, shift) of an inference-mode BatchNorm over axis 1, or None if not foldable."""
    attrs = node.get("attrs", {})
    if _int(attrs, "axis", 1) != 1 or _true(attrs, "output_mean_var"):
        return None
    names = [graph.nodes[e[0]]["name"] for e in node["inputs"]]
    if len(names) != 5:
        return None
    _, gamma_n, beta_n, mean_n, var_n = names
    if gamma_n not in args or beta_n not in args or mean_n not in aux or var_n not in aux:
        return None
    mean = aux[mean_n].asnumpy().astype(np.float64)
    var = aux[var_n].asnumpy().astype(np.float64)
    beta = args[beta_n].asnumpy().astype(np.float64)
    gamma = (
        np.ones_like(mean)
        if _true(attrs, "fix_gamma", True)
        else args[gamma_n].asnumpy().astype(np.float64)
    )
    eps = _float(attrs, "eps", 1e-3)
    scale = gamma / np.sqrt(var + eps)
    shift = beta - mean * scale
    return scale.astype(np.float32), shift.astype(np.float32)


def _add_param(graph: Graph, args: dict[str, Any], name: str, value: np.ndarray) -> list[int]:
    """A new float32 parameter (a unique name from ``name``) in the graph and in ``args``; its
    input entry."""
    nid = graph.add_variable(name, value.shape)
    args[graph.nodes[nid]["name"]] = mx.nd.array(value, dtype=np.float32)
    return [nid, 0, 0]


def fold(
    sym: mx.sym.Symbol,
    arg_params: dict[str, mx.nd.NDArray],
    aux_params: dict[str, mx.nd.NDArray],
    *,
    data_shape: tuple[int, ...] | None = None,
    fuse_residual: bool = True,
    pack_activations: bool = True,
    channel_affine: bool = True,
) -> tuple[mx.sym.Symbol, dict[str, mx.nd.NDArray], dict[str, mx.nd.NDArray]]:
    """Fold BatchNorm layers and residual adds into the neighbouring binary layers (see the
    module docstring). ``fuse_residual=False`` skips rewrite 4, ``pack_activations=False``
    rewrite 7 and ``channel_affine=False`` rewrite 8 (they make operators or attributes that
    run on the CPU path only).

    Returns a new ``(sym, arg_params, aux_params)`` for inference; parameters that the folded
    graph no longer reads are dropped. ``data_shape`` is needed only to fold a BatchNorm on a
    4-d tensor into a fully connected layer through a Flatten (inferred when not given).
    """
    graph = Graph.from_symbol(sym)
    args = dict(arg_params)
    aux = dict(aux_params)
    graph.reserve(args)
    graph.reserve(aux)
    shapes = output_shapes(sym, arg_params, data_shape)

    # 1. BatchNorm -> [QActivation | Flatten]* -> binary layer: input affine.
    consumers = graph.consumers()
    for nid in graph.reachable():
        node = graph.nodes[nid]
        attrs = node.get("attrs", {})
        if not _is_binary(node) or _true(attrs, "input_affine"):
            continue
        src = node["inputs"][0][0]
        flattened = node["op"] == "QFullyConnected" and _true(attrs, "flatten", True)
        while True:
            s = graph.nodes[src]
            sattrs = s.get("attrs", {})
            if s["op"] == "QActivation" and (
                _int(sattrs, "act_bit", 1) == 1 or _true(sattrs, "backward_only")
            ):
                src = s["inputs"][0][0]
            elif s["op"] == "Flatten" and node["op"] == "QFullyConnected":
                flattened = True
                src = s["inputs"][0][0]
            else:
                break
        bn = graph.nodes[src]
        if bn["op"] != "BatchNorm":
            continue
        affine = _bn_affine(bn, graph, args, aux)
        if affine is None:
            continue
        scale, shift = affine
        bn_out = shapes.get(bn["name"])
        if node["op"] == "QFullyConnected" and bn_out is not None and len(bn_out) > 2:
            if not flattened:
                continue
            per = int(np.prod(bn_out[2:]))
            scale, shift = np.repeat(scale, per), np.repeat(shift, per)
        elif node["op"] == "QFullyConnected" and bn_out is None:
            continue
        inputs = graph.named_inputs(nid)
        inputs["data"] = list(bn["inputs"][0])
        attrs = node.setdefault("attrs", {})
        attrs["input_affine"] = "True"
        if flattened and node["op"] == "QFullyConnected":
            attrs["flatten"] = "True"
        for suffix, value in (("in_scale", scale), ("in_shift", shift)):
            inputs[suffix] = _add_param(graph, args, f"{node['name']}_{suffix}", value)
        graph.set_named_inputs(nid, inputs)
    del consumers

    # 2. converted binary layer -> BatchNorm (its only reader): fold into alpha and bias.
    consumers = graph.consumers()
    heads = graph.head_ids()
    for nid in graph.reachable():
        bn = graph.nodes[nid]
        if bn["op"] != "BatchNorm":
            continue
        src = bn["inputs"][0][0]
        layer = graph.nodes[src]
        lattrs = layer.get("attrs", {})
        if (
            not _is_binary(layer)
            or not _true(lattrs, "binarized_weights_only")
            or _true(lattrs, "residual")
            or consumers[src] != [nid]
            or src in heads
        ):
            continue
        affine = _bn_affine(bn, graph, args, aux)
        if affine is None:
            continue
        scale, shift = affine
        inputs = graph.named_inputs(src)
        n_out = scale.shape[0]
        bias = (
            graph.param_array(inputs["bias"], args).asnumpy()
            if "bias" in inputs
            else np.zeros(n_out, np.float32)
        )
        alpha = (
            graph.param_array(inputs["alpha"], args).asnumpy()
            if "alpha" in inputs
            else np.ones(n_out, np.float32)
        )
        new_alpha = (scale.astype(np.float64) * alpha).astype(np.float32)
        new_bias = (scale.astype(np.float64) * bias + shift).astype(np.float32)
        lattrs["no_bias"] = "False"
        lattrs["scaling_factor"] = "True"
        for suffix, value in (("bias", new_bias), ("alpha", new_alpha)):
            inputs[suffix] = _add_param(graph, args, f"{layer['name']}_{suffix}_folded", value)
        graph.set_named_inputs(src, inputs)
        graph.redirect(nid, src)  # readers of the BatchNorm now read the layer
        consumers = graph.consumers()
        heads = graph.head_ids()

    # 2b. float Convolution / FullyConnected -> BatchNorm (its only reader): the BatchNorm's
    #     per-channel scale goes into the weights, its shift into the bias (standard inference
    #     folding; float rounding differs from normalise-then-scale).
    consumers = graph.consumers()
    heads = graph.head_ids()
    for nid in graph.reachable():
        bn = graph.nodes[nid]
        if bn["op"] != "BatchNorm":
            continue
        src = bn["inputs"][0][0]
        layer = graph.nodes[src]
        if (
            layer["op"] not in ("Convolution", "FullyConnected")
            or consumers[src] != [nid]
            or src in heads
        ):
            continue
        lattrs = layer.setdefault("attrs", {})
        names = [graph.nodes[e[0]]["name"] for e in layer["inputs"]]
        if (
            len(names) < 2
            or names[1] not in args
            or graph.nodes[layer["inputs"][1][0]]["op"] != "null"
        ):
            continue
        affine = _bn_affine(bn, graph, args, aux)
        if affine is None:
            continue
        scale, shift = affine
        weight = args[names[1]].asnumpy()
        if weight.dtype != np.float32 or weight.shape[0] != scale.shape[0]:
            continue
        no_bias = _true(lattrs, "no_bias")
        bias = np.zeros(scale.shape[0], np.float32) if no_bias else args[names[2]].asnumpy()
        scale64 = scale.astype(np.float64)
        new_w = (weight * scale64.reshape((-1,) + (1,) * (weight.ndim - 1))).astype(np.float32)
        new_b = (bias * scale64 + shift).astype(np.float32)
        layer["inputs"] = [
            layer["inputs"][0],
            _add_param(graph, args, f"{names[1]}_folded", new_w),
            _add_param(graph, args, f"{layer['name']}_bias_folded", new_b),
        ]
        lattrs["no_bias"] = "False"
        graph.redirect(nid, src)
        consumers = graph.consumers()
        heads = graph.head_ids()

    # 3. A QActivation read only by 1-bit layers is a no-op in inference: the layer takes the
    #    sign itself (sgn(sgn x) = sgn x; backward_only is the identity forward).
    consumers = graph.consumers()
    heads = graph.head_ids()
    for nid in graph.reachable():
        act = graph.nodes[nid]
        aattrs = act.get("attrs", {})
        if act["op"] != "QActivation" or nid in heads or not consumers[nid]:
            continue
        if not (_int(aattrs, "act_bit", 1) == 1 or _true(aattrs, "backward_only")):
            continue
        readers = [graph.nodes[c] for c in consumers[nid]]
        if not all(
            _is_binary(r) and r["inputs"][0][0] == nid and all(e[0] != nid for e in r["inputs"][1:])
            for r in readers
        ):
            continue
        for r in readers:
            r["inputs"][0] = list(act["inputs"][0])
        consumers = graph.consumers()

    # 4. 1-bit QConvolution -> elemwise_add (its only reader): the add goes into the epilogue.
    consumers = graph.consumers()
    heads = graph.head_ids()
    for nid in graph.reachable() if fuse_residual else []:
        add = graph.nodes[nid]
        if add["op"] not in _ADDS or len(add["inputs"]) != 2:
            continue
        for k in (0, 1):
            src, out_index, _ = add["inputs"][k]
            other = add["inputs"][1 - k]
            conv = graph.nodes[src]
            if (
                conv["op"] != "QConvolution"
                or not _is_binary(conv)
                or out_index != 0
                or _true(conv.get("attrs", {}), "residual")
                or consumers[src] != [nid]
                or src in heads
                or other[0] == src
            ):
                continue
            conv["inputs"].append(list(other))
            conv.setdefault("attrs", {})["residual"] = "True"
            graph.redirect(nid, src)
            consumers = graph.consumers()
            heads = graph.head_ids()
            break

    # 7. conv -> conv through a folded sign: packed activations.
    consumers = graph.consumers()
    heads = graph.head_ids()
    for nid in graph.reachable() if pack_activations else []:
        second = graph.nodes[nid]
        sattrs = second.get("attrs", {})
        if not _packed_conv(second) or not _true(sattrs, "input_affine"):
            continue
        src, out_index, _ = second["inputs"][0]
        first = graph.nodes[src]
        fattrs = first.get("attrs", {})
        if (
            not _packed_conv(first)
            or out_index != 0
            or _true(fattrs, "residual")
            or _true(fattrs, "out_packed")
            or consumers[src] != [nid]
            or src in heads
            or any(e[0] == src for e in second["inputs"][1:])
        ):
            continue
        second_in = graph.named_inputs(nid)
        first_in = graph.named_inputs(src)
        first_in["out_scale"] = second_in.pop("in_scale")
        first_in["out_shift"] = second_in.pop("in_shift")
        sattrs["input_affine"] = "False"
        sattrs["in_packed"] = "True"
        sattrs["in_channels"] = str(_int(fattrs, "num_filter", 0))
        fattrs["out_packed"] = "True"
        graph.set_named_inputs(nid, second_in)
        graph.set_named_inputs(src, first_in)
        consumers = graph.consumers()

    # 8. Inference BatchNorm [-> relu] on a plain-layout array -> QChannelAffine [relu].
    consumers = graph.consumers()
    heads = graph.head_ids()
    for nid in graph.reachable() if channel_affine else []:
        bn = graph.nodes[nid]
        if bn["op"] != "BatchNorm":
            continue
        src = graph.nodes[bn["inputs"][0][0]]
        if not (
            src["op"] in _PLAIN_OUTPUT
            or (src["op"] == "null" and src["name"] not in args and src["name"] not in aux)
        ):
            continue
        affine = _bn_affine(bn, graph, args, aux)
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
            inputs.append(_add_param(graph, args, f"{bn['name']}_{suffix}", value))
        graph.nodes[nid] = {
            "op": "QChannelAffine",
            "name": bn["name"],
            "attrs": {"relu": str(relu_id is not None)},
            "inputs": inputs,
        }
        if relu_id is not None:
            graph.redirect(relu_id, nid)
            consumers = graph.consumers()
            heads = graph.head_ids()

    # 5. Small-channel inference BatchNorm -> 1x1 Convolution with a diagonal weight.
    consumers = graph.consumers()
    for nid in graph.reachable():
        bn = graph.nodes[nid]
        if bn["op"] != "BatchNorm" or _ndim(graph, nid, consumers, shapes) != 4:
            continue
        affine = _bn_affine(bn, graph, args, aux)
        if affine is None or affine[0].shape[0] > 4:
            continue
        scale, shift = affine
        channels = scale.shape[0]
        weight = np.diag(scale).reshape(channels, channels, 1, 1).astype(np.float32)
        graph.nodes[nid] = {
            "op": "Convolution",
            "name": bn["name"],
            "attrs": {"kernel": "(1, 1)", "num_filter": str(channels), "no_bias": "False"},
            "inputs": [
                list(bn["inputs"][0]),
                _add_param(graph, args, f"{bn['name']}_diag_weight", weight),
                _add_param(graph, args, f"{bn['name']}_diag_bias", shift),
            ],
        }

    # 6. One plain-layout copy of a non-binmx output that several binmx inputs read.
    binmx_ops = _BINARY + ("QActivation",)
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

    new_sym = graph.to_symbol()
    keep_args = set(new_sym.list_arguments())
    keep_aux = set(new_sym.list_auxiliary_states())
    return (
        new_sym,
        {k: v for k, v in args.items() if k in keep_args},
        {k: v for k, v in aux.items() if k in keep_aux},
    )


# binmx operators: their outputs are plain (NCHW) arrays, never in oneDNN's blocked layout.
_PLAIN_OUTPUT = (*_BINARY, "QActivation", "QNHWCToNCHW", "QChannelAffine")

# MXNet operators that run on oneDNN and leave their output in its blocked layout (given a
# blocked input, or always for Convolution): what rewrite 6 hands a binmx convolution as NHWC.
_ONEDNN_BLOCKED = ("Convolution", "Pooling", "BatchNorm", "Activation", "elemwise_add", "add_n")


def _reads_nchw(reader: dict[str, Any], k: int) -> bool:
    """Whether input k of a binmx node is a QConvolution's float NCHW data or residual (what
    the NHWC hand-over may feed; not a parameter, not packed words)."""
    if reader["op"] != "QConvolution":
        return False
    attrs = reader.get("attrs", {})
    names = op_inputs(reader["op"], attrs)
    if k >= len(names):
        return False
    return names[k] == "residual" or (names[k] == "data" and not _true(attrs, "in_packed"))


def _is_reshape_barrier(node: dict[str, Any]) -> bool:
    return node["op"] == "Reshape" and node.get("attrs", {}).get("shape") == "(-2,)"


def _packed_conv(node: dict[str, Any]) -> bool:
    """A converted 1-bit QConvolution with one group (what packed activations need)."""
    attrs = node.get("attrs", {})
    return (
        node["op"] == "QConvolution"
        and _is_binary(node)
        and _true(attrs, "binarized_weights_only")
        and _int(attrs, "num_group", 1) == 1
    )


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
