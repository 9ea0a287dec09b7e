"""Inference-time folding of BatchNorm, signs and residual adds into binmx's binary layers.

:func:`fold` runs the named passes of :data:`PASSES` in their order, each one function that
rewrites a :class:`binmx._graph.ModelGraph` in place (docs/design.md §5). All are exact up to
float rounding:

1. ``bn_to_input_affine``: BatchNorm -> [QActivation | Flatten]* -> 1-bit layer: the layer
   takes ``sgn(x * scale + shift)`` itself (``input_affine``).
2. ``bn_into_binary_epilogue``: converted 1-bit layer -> BatchNorm: the BatchNorm goes into
   ``alpha`` and ``bias``.
3. ``bn_into_float_layer``: float Convolution / FullyConnected -> BatchNorm: into the weights
   and bias.
4. ``drop_sign_activations``: a sign QActivation read only by 1-bit layers goes.
5. ``fuse_residual_add``: 1-bit QConvolution -> elemwise_add: the add goes into the epilogue
   (``residual``; switch ``fuse_residual``).
6. ``pack_activations``: conv -> conv through a folded sign: sign words between them
   (``out_packed`` / ``in_packed``; switch ``pack_activations``).

7-9. The oneDNN layout hand-overs (:mod:`binmx._onednn_layout`, switch ``onednn_layout``):
   ``bn_to_channel_affine`` (also switch ``channel_affine``), ``small_bn_to_conv``,
   ``nhwc_handover``.

Each pass function's docstring is the detailed statement. :func:`fold` never modifies its
arguments. It is used by the converter (``--fold``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import mxnet as mx
import numpy as np

from binmx import _onednn_layout
from binmx._graph import ModelGraph, bool_attr, int_attr, is_binary

__all__ = ["PASSES", "FoldPass", "fold"]

_ADDS = ("elemwise_add", "add_n")  # add_n only with two inputs


def bn_to_input_affine(model: ModelGraph) -> None:
    """Pass 1, BatchNorm -> sign. A 1-bit ``QConvolution`` / ``QFullyConnected`` takes the sign
    of its input. When that input is a BatchNorm (in inference mode, through any number of
    ``QActivation`` layers with ``act_bit=1`` or ``backward_only=True``, and ``Flatten`` for a
    fully connected layer), the BatchNorm is a per-channel affine map::

        bn(x)_c = scale_c * x_c + shift_c,   scale_c = gamma_c / sqrt(var_c + eps),
                                             shift_c = beta_c - mean_c * scale_c

    (``gamma_c = 1`` when ``fix_gamma``), so ``sgn(bn(x)) = sgn(x * scale + shift)``. The layer
    gets ``input_affine=True`` and the inputs ``in_scale`` / ``in_shift``; its packing pass
    computes the bits directly from the un-normalised input, and the BatchNorm and QActivation
    nodes disappear when nothing else reads them. A sign can differ from the unfolded model
    only where the BatchNorm output is within float rounding of 0. A fully connected layer
    reading a 4-d BatchNorm through a Flatten gets the per-channel affine repeated H*W times
    (the shapes must be known).
    """
    graph = model.graph
    for nid in graph.reachable():
        node = graph.nodes[nid]
        attrs = node.get("attrs", {})
        if not is_binary(node) or bool_attr(attrs, "input_affine"):
            continue
        fc = node["op"] == "QFullyConnected"
        src = node["inputs"][0][0]
        flattened = fc and bool_attr(attrs, "flatten", True)
        while True:
            s = graph.nodes[src]
            sattrs = s.get("attrs", {})
            if s["op"] == "QActivation" and (
                int_attr(sattrs, "act_bit", 1) == 1 or bool_attr(sattrs, "backward_only")
            ):
                src = s["inputs"][0][0]
            elif s["op"] == "Flatten" and fc:
                flattened = True
                src = s["inputs"][0][0]
            else:
                break
        bn = graph.nodes[src]
        if bn["op"] != "BatchNorm":
            continue
        affine = model.batchnorm_affine(src)
        if affine is None:
            continue
        scale, shift = affine
        bn_out = model.shapes.get(bn["name"])
        if fc and bn_out is None:
            continue
        if fc and len(bn_out) > 2:
            if not flattened:
                continue
            per = int(np.prod(bn_out[2:]))
            scale, shift = np.repeat(scale, per), np.repeat(shift, per)
        inputs = graph.named_inputs(nid)
        inputs["data"] = list(bn["inputs"][0])
        attrs = node.setdefault("attrs", {})
        attrs["input_affine"] = "True"
        if flattened:
            attrs["flatten"] = "True"
        for suffix, value in (("in_scale", scale), ("in_shift", shift)):
            inputs[suffix] = model.add_param(f"{node['name']}_{suffix}", value)
        graph.set_named_inputs(nid, inputs)


def bn_into_binary_epilogue(model: ModelGraph) -> None:
    """Pass 2, binary layer -> BatchNorm. A converted (``binarized_weights_only``) 1-bit layer
    computes ``y = alpha_f * dot + bias_f``; a BatchNorm that is its only reader gives::

        scale_f * y + shift_f = (scale_f * alpha_f) * dot + (scale_f * bias_f + shift_f)

    so the layer takes the folded ``alpha`` and ``bias`` (``scaling_factor=True``,
    ``no_bias=False``) in its fused epilogue and the BatchNorm disappears. Not for a layer with
    a fused residual (the add comes after the epilogue)."""
    graph = model.graph
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
            not is_binary(layer)
            or not bool_attr(lattrs, "binarized_weights_only")
            or bool_attr(lattrs, "residual")
            or consumers[src] != [nid]
            or src in heads
        ):
            continue
        affine = model.batchnorm_affine(nid)
        if affine is None:
            continue
        scale, shift = affine
        inputs = graph.named_inputs(src)
        n_out = scale.shape[0]
        bias = model.param(inputs["bias"]) if "bias" in inputs else np.zeros(n_out, np.float32)
        alpha = model.param(inputs["alpha"]) if "alpha" in inputs else np.ones(n_out, np.float32)
        if bias is None or alpha is None:  # computed, not parameters
            continue
        new_alpha = (scale.astype(np.float64) * alpha).astype(np.float32)
        new_bias = (scale.astype(np.float64) * bias + shift).astype(np.float32)
        lattrs["no_bias"] = "False"
        lattrs["scaling_factor"] = "True"
        for suffix, value in (("bias", new_bias), ("alpha", new_alpha)):
            inputs[suffix] = model.add_param(f"{layer['name']}_{suffix}_folded", value)
        graph.set_named_inputs(src, inputs)
        graph.redirect(nid, src)  # readers of the BatchNorm now read the layer
        consumers = graph.consumers()
        heads = graph.head_ids()


def bn_into_float_layer(model: ModelGraph) -> None:
    """Pass 3. A float ``Convolution`` / ``FullyConnected`` whose only reader is a BatchNorm
    takes it into its weights and bias (``W_f * scale_f``, ``b_f * scale_f + shift_f``):
    standard inference folding; the float rounding differs from normalise-then-scale."""
    graph = model.graph
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
        names = graph.input_names(src)  # MXNet's order: data, weight, [bias]
        if (
            len(names) < 2
            or names[1] not in model.args
            or graph.nodes[layer["inputs"][1][0]]["op"] != "null"
        ):
            continue
        affine = model.batchnorm_affine(nid)
        if affine is None:
            continue
        scale, shift = affine
        weight = model.args[names[1]].asnumpy()
        if weight.dtype != np.float32 or weight.shape[0] != scale.shape[0]:
            continue
        no_bias = bool_attr(lattrs, "no_bias")
        bias = np.zeros(scale.shape[0], np.float32) if no_bias else model.args[names[2]].asnumpy()
        scale64 = scale.astype(np.float64)
        new_w = (weight * scale64.reshape((-1,) + (1,) * (weight.ndim - 1))).astype(np.float32)
        new_b = (bias * scale64 + shift).astype(np.float32)
        layer["inputs"] = [
            layer["inputs"][0],
            model.add_param(f"{names[1]}_folded", new_w),
            model.add_param(f"{layer['name']}_bias_folded", new_b),
        ]
        lattrs["no_bias"] = "False"
        graph.redirect(nid, src)
        consumers = graph.consumers()
        heads = graph.head_ids()


def drop_sign_activations(model: ModelGraph) -> None:
    """Pass 4. A ``QActivation`` (``act_bit=1`` or ``backward_only``) read only by 1-bit
    layers, as their data, is a no-op in inference: those layers take the sign of their input
    themselves (``sgn(sgn x) = sgn x``; ``backward_only`` is the identity forward)."""
    graph = model.graph
    consumers = graph.consumers()
    heads = graph.head_ids()
    for nid in graph.reachable():
        act = graph.nodes[nid]
        aattrs = act.get("attrs", {})
        if act["op"] != "QActivation" or nid in heads or not consumers[nid]:
            continue
        if not (int_attr(aattrs, "act_bit", 1) == 1 or bool_attr(aattrs, "backward_only")):
            continue
        readers = [graph.nodes[c] for c in consumers[nid]]
        if not all(
            is_binary(r) and r["inputs"][0][0] == nid and all(e[0] != nid for e in r["inputs"][1:])
            for r in readers
        ):
            continue
        for r in readers:
            r["inputs"][0] = list(act["inputs"][0])
        consumers = graph.consumers()


def fuse_residual_add(model: ModelGraph) -> None:
    """Pass 5. 1-bit ``QConvolution`` -> ``elemwise_add`` (its only reader, e.g. a residual
    unit's ``conv2 + shortcut``): the add moves into the convolution's epilogue. The layer
    gets ``residual=True`` and the add's other operand as its input ``residual``, computing
    ``(alpha * dot + bias) + residual`` in float32: bit-identical to the add (float addition is
    commutative), one operator and one pass over the output fewer."""
    graph = model.graph
    consumers = graph.consumers()
    heads = graph.head_ids()
    for nid in graph.reachable():
        add = graph.nodes[nid]
        if add["op"] not in _ADDS or len(add["inputs"]) != 2:
            continue
        for k in (0, 1):
            src, out_index, _ = add["inputs"][k]
            other = add["inputs"][1 - k]
            conv = graph.nodes[src]
            if (
                conv["op"] != "QConvolution"
                or not is_binary(conv)
                or out_index != 0
                or bool_attr(conv.get("attrs", {}), "residual")
                or consumers[src] != [nid]
                or src in heads
                or other[0] == src
            ):
                continue
            inputs = graph.named_inputs(src)
            inputs["residual"] = list(other)
            conv.setdefault("attrs", {})["residual"] = "True"
            graph.set_named_inputs(src, inputs)
            graph.redirect(nid, src)
            consumers = graph.consumers()
            heads = graph.head_ids()
            break


def _packed_conv(node: dict) -> bool:
    """A converted 1-bit QConvolution with one group (what packed activations need)."""
    attrs = node.get("attrs", {})
    return (
        node["op"] == "QConvolution"
        and is_binary(node)
        and bool_attr(attrs, "binarized_weights_only")
        and int_attr(attrs, "num_group", 1) == 1
    )


def pack_activations(model: ModelGraph) -> None:
    """Pass 6, packed activations. A converted 1-bit ``QConvolution`` (``num_group=1``, no
    residual) whose only reader is the data input of another converted 1-bit ``QConvolution``
    with an input affine (pass 1: the BatchNorm + sign between them, e.g. a residual unit's
    conv1 -> conv2) hands it sign bits instead of floats: the first gets ``out_packed=True``
    and the second's ``in_scale`` / ``in_shift`` as its ``out_scale`` / ``out_shift``, and
    writes int64 words ``(N, OH, OW, ceil(F/64))``; the second gets ``in_packed=True`` and
    ``in_channels=F`` and loses its input affine. The bits are exactly the ones the second
    layer's packing pass took from the float tensor (bit-identical outputs), without writing,
    reading and re-packing that tensor."""
    graph = model.graph
    consumers = graph.consumers()
    heads = graph.head_ids()
    for nid in graph.reachable():
        second = graph.nodes[nid]
        sattrs = second.get("attrs", {})
        if not _packed_conv(second) or not bool_attr(sattrs, "input_affine"):
            continue
        src, out_index, _ = second["inputs"][0]
        first = graph.nodes[src]
        fattrs = first.get("attrs", {})
        if (
            not _packed_conv(first)
            or out_index != 0
            or bool_attr(fattrs, "residual")
            or bool_attr(fattrs, "out_packed")
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
        sattrs["in_channels"] = str(int_attr(fattrs, "num_filter", 0))
        fattrs["out_packed"] = "True"
        graph.set_named_inputs(nid, second_in)
        graph.set_named_inputs(src, first_in)
        consumers = graph.consumers()


@dataclass(frozen=True)
class FoldPass:
    """One pass of :func:`fold`: its number (the order it runs in), name, function and the
    :func:`fold` keywords that must all be true for it to run."""

    number: int
    name: str
    run: Callable[[ModelGraph], None]
    switches: tuple[str, ...] = ()


def _numbered(
    passes: list[tuple[str, Callable[[ModelGraph], None], tuple[str, ...]]],
) -> tuple[FoldPass, ...]:
    return tuple(FoldPass(i, *p) for i, p in enumerate(passes, start=1))


PASSES: tuple[FoldPass, ...] = _numbered(
    [
        ("bn_to_input_affine", bn_to_input_affine, ()),
        ("bn_into_binary_epilogue", bn_into_binary_epilogue, ()),
        ("bn_into_float_layer", bn_into_float_layer, ()),
        ("drop_sign_activations", drop_sign_activations, ()),
        ("fuse_residual_add", fuse_residual_add, ("fuse_residual",)),
        ("pack_activations", pack_activations, ("pack_activations",)),
        *[
            (name, run, ("onednn_layout", *switches))
            for name, run, switches in _onednn_layout.PASSES
        ],
    ]
)


def fold(
    sym: mx.sym.Symbol,
    arg_params: dict[str, mx.nd.NDArray],
    aux_params: dict[str, mx.nd.NDArray],
    *,
    data_shape: tuple[int, ...] | None = None,
    fuse_residual: bool = True,
    pack_activations: bool = True,
    channel_affine: bool = True,
    onednn_layout: bool = True,
) -> tuple[mx.sym.Symbol, dict[str, mx.nd.NDArray], dict[str, mx.nd.NDArray]]:
    """Fold BatchNorm layers, signs and residual adds into the neighbouring binary layers: the
    passes of :data:`PASSES`, in order (see the module docstring).

    ``fuse_residual=False`` skips pass 5 and ``pack_activations=False`` pass 6 (they make
    attributes that run on the CPU path only); ``onednn_layout=False`` skips the oneDNN layout
    hand-overs (passes 7-9, :mod:`binmx._onednn_layout`), and ``channel_affine=False`` pass 7
    alone (QChannelAffine runs on the CPU only).

    Returns a new ``(sym, arg_params, aux_params)`` for inference; parameters that the folded
    graph no longer reads are dropped. ``data_shape`` is needed only to fold a BatchNorm on a
    4-d tensor into a fully connected layer through a Flatten (inferred when not given).
    """
    switches = {
        "fuse_residual": fuse_residual,
        "pack_activations": pack_activations,
        "channel_affine": channel_affine,
        "onednn_layout": onednn_layout,
    }
    model = ModelGraph(sym, arg_params, aux_params, data_shape=data_shape)
    for p in PASSES:
        if all(switches[s] for s in p.switches):
            p.run(model)
    return model.result()
