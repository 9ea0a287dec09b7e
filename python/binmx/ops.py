"""``mx.sym`` / ``mx.nd`` call forms of binmx's operators, and the weight packer.

Operators registered through MXNet's extension API take their inputs positionally only and
create no weight or bias variables. :func:`install` therefore replaces ``mx.sym.QConvolution``,
``mx.nd.QConvolution`` (and ``QFullyConnected``, ``QActivation``) with wrappers that accept
the call forms of ``Convolution`` / ``FullyConnected`` / ``Activation``:

* inputs positional or as keywords (``data=``, ``weight=``, ``bias=``, ``alpha=``);
* ``name=`` and ``attr=``; in ``mx.sym`` a missing input becomes the variable
  ``<name>_weight`` / ``<name>_bias`` / ``<name>_alpha``, and the name comes from the current
  :class:`mx.name.NameManager` (hint ``qconvolution``, ...), as for MXNet's own ops;
* attribute values given as Python objects (``kernel=(3, 3)``, ``no_bias=True``).

Inputs, in order: ``data, weight, [bias] (unless no_bias), [alpha] (binarized_weights_only and
scaling_factor), [in_scale, in_shift] (input_affine), [out_scale, out_shift] (QConvolution,
out_packed), [residual] (QConvolution, residual)`` (:func:`op_inputs`, defined in
``binmx._graph`` with the attribute readers; a boolean attribute follows MXNet's rule).

``out_packed=True`` / ``in_packed=True, in_channels=C`` (QConvolution, converted 1-bit layers
with ``num_group=1``; inference, made by :func:`binmx.fold` between a conv and the next conv's
sign): the first writes int64 sign words ``(N, OH, OW, ceil(F/64))`` of
``out * out_scale + out_shift`` (bit ``f % 64`` of word ``f // 64`` set for ``< 0``), the second
reads them as its ``data`` (``(N, H, W, ceil(C/64))``) instead of ``sgn`` of a float input.
No backward (``MXNetError``).

``residual=True`` (QConvolution, ``act_bit = weight_bit = 1`` only; inference, e.g. a folded
residual add): the input ``residual`` of the output's shape is added last, in float32, in the
kernel's epilogue: ``out = (alpha * dot + bias) + residual``, bit-identical to
``elemwise_add(QConvolution(...), residual)``. No backward (``MXNetError``). Give it as
``residual=True`` plus the input (positionally last, or ``mx.sym`` creates ``<name>_residual``),
or as ``residual=<array or symbol>``, which sets the attribute too.

``input_affine=True`` (``act_bit=1`` only; inference, e.g. a folded BatchNorm): the layer's
activation is ``sgn(x * in_scale + in_shift)`` instead of ``sgn(x)``, float32 product then sum,
per input channel ``c`` for QConvolution (``in_scale``/``in_shift`` of shape ``(C,)``) and per
feature ``d`` of the ``rows x D`` view for QFullyConnected (shape ``(D,)``; with ``flatten`` the
flattened index, so a per-channel affine of an ``(N, C, H, W)`` input is repeated ``H*W`` times
per channel). ``mx.sym`` creates ``<name>_in_scale`` / ``<name>_in_shift`` when they are not
given. The backward pass of such a layer raises ``MXNetError`` (no gradient is defined).

The operators' semantics (forward, straight-through gradients, packed format) are documented
in :mod:`binmx.reference` and docs/design.md §3.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mxnet as mx
import numpy as np

from binmx._graph import Q_OPS, bits, bool_attr, op_inputs, parse_ints

__all__ = [
    "QActivation",
    "QConvolution",
    "QFullyConnected",
    "install",
    "op_inputs",
    "pack_weight",
    "sym",
    "nd",
]

_OPS = Q_OPS
_INPUT_KEYS = ("data", "weight", "bias", "alpha", "in_scale", "in_shift", "out_scale", "out_shift")
_RAW: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {}


def _attr_text(key: str, value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "True" if value else "False"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    if isinstance(value, str):
        return value
    if isinstance(value, (tuple, list)):
        items = []
        for v in value:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"Expected `{key}` to be a tuple of ints, got {value!r}")
            items.append(str(int(v)))
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    raise TypeError(f"Expected `{key}` to be a bool, int, float, str or tuple, got {value!r}")


_ATTR_CACHE: dict[tuple[Any, ...], tuple[list[str], dict[str, str]]] = {}


def _attrs_and_names(op: str, kwargs: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """Attribute texts and input names, memoised per (op, attribute values): an imperative call
    in a loop repeats the same attributes, and converting them costs more than a small binary
    layer's kernel. Returns copies, so callers may modify them."""
    try:
        key = (op, *((k, type(v), v) for k, v in kwargs.items()))
        hit = _ATTR_CACHE.get(key)
    except TypeError:  # an unhashable value (a list): no memo
        key, hit = None, None
    if hit is None:
        attrs = {k: _attr_text(k, v) for k, v in kwargs.items() if v is not None}
        hit = (op_inputs(op, attrs), attrs)
        if key is not None and len(_ATTR_CACHE) < 4096:
            _ATTR_CACHE[key] = hit
    return list(hit[0]), dict(hit[1])


def _split(
    op: str, args: tuple[Any, ...], kwargs: dict[str, Any], kind: type
) -> tuple[list[str], dict[str, Any], dict[str, str]]:
    """Separate inputs (positional + keyword) from attributes; attributes become strings."""
    given = {k: kwargs.pop(k) for k in _INPUT_KEYS if k in kwargs and kwargs[k] is not None}
    # `residual` is both an attribute (True/False) and, when True, an input: an array or
    # symbol given as `residual=` is the input and sets the attribute.
    if op == "QConvolution" and isinstance(kwargs.get("residual"), (mx.nd.NDArray, mx.sym.Symbol)):
        given["residual"] = kwargs.pop("residual")
        kwargs["residual"] = True
    for k in _INPUT_KEYS:
        kwargs.pop(k, None)  # explicit None means "not given"
    names, attrs = _attrs_and_names(op, kwargs)
    extra = [k for k in given if k not in names]
    if extra:
        raise ValueError(
            f"{op}: input(s) {extra} are not used with these attributes (inputs: {names})"
        )
    if len(args) > len(names):
        raise ValueError(
            f"{op}: expected at most {len(names)} positional inputs {names}, got {len(args)}"
        )
    inputs: dict[str, Any] = {}
    for n, a in zip(names, args, strict=False):  # fewer positional inputs than names is fine
        if n in given:
            raise ValueError(f"{op}: input `{n}` given both positionally and as a keyword")
        inputs[n] = a
    inputs.update(given)
    for n, v in inputs.items():
        if v is not None and not isinstance(v, kind):
            raise TypeError(
                f"{op}: expected input `{n}` to be a {kind.__module__}.{kind.__name__}, "
                f"got {type(v).__name__}"
            )
    return names, inputs, attrs


def _make_sym(op: str) -> Callable[..., mx.sym.Symbol]:
    def wrapper(
        *args: Any, name: str | None = None, attr: dict[str, str] | None = None, **kwargs: Any
    ) -> mx.sym.Symbol:
        kwargs.pop("out", None)
        names, inputs, attrs = _split(op, args, kwargs, mx.sym.Symbol)
        if "data" not in inputs:
            inputs["data"] = mx.sym.Variable("data") if op == "QActivation" else None
        full_name = mx.name.NameManager.current.get(name, op.lower())
        syms = []
        for n in names:
            s = inputs.get(n)
            if s is None:
                s = mx.sym.Variable(f"{full_name}_{n}")
            syms.append(s)
        _annotate_param_shapes(op, names, syms, attrs)
        raw = _RAW[op][1]
        # The name is final: a plain NameManager stops a Prefix manager from prefixing twice.
        with mx.name.NameManager():
            return raw(*syms, name=full_name, attr=attr, **attrs)

    wrapper.__name__ = op
    wrapper.__qualname__ = op
    wrapper.__doc__ = f"``mx.sym.{op}`` with Convolution-style call forms (see binmx.ops)."
    return wrapper


def _packs_levels(attrs: dict[str, Any]) -> bool:
    """A packed weight of a layer that is not act_bit = weight_bit = 1 is a k-bit level stream."""
    try:
        return bits(attrs) != (1, 1)
    except ValueError:
        return False  # the operator names the bad attribute


def _param_shapes(op: str, attrs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Partial shapes (-1 = unknown) of the parameter inputs of ``op``, as far as attrs tell.

    -1 rather than 0: MXNet reads a ``__shape__`` 0 as unknown only in its legacy shape mode;
    under ``mx.util.set_np_shape(True)`` a 0 is a known zero size, while -1 is unknown in both.
    """
    if op == "QConvolution":
        kernel = parse_ints(attrs.get("kernel"))
        out = parse_ints(attrs.get("num_filter"))
        if kernel is None or len(kernel) != 2 or out is None:
            return {}
        if bool_attr(attrs, "binarized_weights_only") and _packs_levels(attrs):
            wshape = (-1,)
        elif bool_attr(attrs, "binarized_weights_only"):
            wshape = (out[0], kernel[0], kernel[1], -1)
        else:
            wshape = (out[0], -1, kernel[0], kernel[1])
    elif op == "QFullyConnected":
        out = parse_ints(attrs.get("num_hidden"))
        if out is None:
            return {}
        packs_levels = bool_attr(attrs, "binarized_weights_only") and _packs_levels(attrs)
        wshape = (-1,) if packs_levels else (out[0], -1)
    else:
        return {}
    # in_scale / in_shift: (C,) or (D,), known only from the data shape.
    return {
        "weight": wshape,
        "bias": (out[0],),
        "alpha": (out[0],),
        "in_scale": (-1,),
        "in_shift": (-1,),
        "out_scale": (out[0],),
        "out_shift": (out[0],),
        "residual": (-1, -1, -1, -1),
    }


def _annotate_param_shapes(
    op: str, names: list[str], syms: list[mx.sym.Symbol], attrs: dict[str, str]
) -> None:
    """Give weight/bias/alpha variables without a shape their partial shape (-1 = unknown).

    MXNet 1.9's shape inference for extension operators sizes a buffer by the sum of the
    inputs' ranks, counting an input of unknown rank as -1, and so overruns it whenever an
    input's rank is unknown. A partial shape such as ``(num_filter, -1, kh, kw)`` (what
    Convolution itself would infer first) makes every rank known.
    """
    shapes = _param_shapes(op, attrs)
    for n, s in zip(names, syms, strict=True):
        if n in shapes and s.get_children() is None and "__shape__" not in s.list_attr():
            s._set_attr(__shape__=str(shapes[n]))


def _make_nd(op: str) -> Callable[..., mx.nd.NDArray]:
    def wrapper(
        *args: Any, out: mx.nd.NDArray | None = None, name: str | None = None, **kwargs: Any
    ) -> mx.nd.NDArray:
        del name  # imperative calls have no node name
        names, inputs, attrs = _split(op, args, kwargs, mx.nd.NDArray)
        missing = [n for n in names if inputs.get(n) is None]
        if missing:
            raise ValueError(
                f"{op}: missing input(s) {missing}; expected inputs {names} for these attributes"
            )
        raw = _RAW[op][0]
        if out is not None:
            return raw(*[inputs[n] for n in names], out=out, **attrs)
        return raw(*[inputs[n] for n in names], **attrs)

    wrapper.__name__ = op
    wrapper.__qualname__ = op
    wrapper.__doc__ = f"``mx.nd.{op}`` with Convolution-style call forms (see binmx.ops)."
    return wrapper


class _Namespace:
    """Attribute access to the wrappers of one frontend (``ops.sym.QConvolution``)."""

    def __init__(self, kind: str) -> None:
        self._kind = kind

    def __getattr__(self, op: str) -> Callable[..., Any]:
        if op not in _OPS:
            raise AttributeError(op)
        install()
        return _WRAPPERS[self._kind][op]


_WRAPPERS: dict[str, dict[str, Callable[..., Any]]] = {
    "sym": {op: _make_sym(op) for op in _OPS},
    "nd": {op: _make_nd(op) for op in _OPS},
}
sym = _Namespace("sym")
nd = _Namespace("nd")


def annotate_json(text: str) -> str:
    """Symbol JSON with partial shapes on the shapeless weight/bias/alpha variables of Q ops.

    Symbols written by MXNet's Module or the original BMXNet carry no shapes on those
    variables; see :func:`_annotate_param_shapes` for why binmx adds them when loading.
    """
    import json

    graph = json.loads(text)
    nodes = graph.get("nodes", [])
    changed = False
    for node in nodes:
        op = node.get("op")
        if op not in ("QConvolution", "QFullyConnected"):
            continue
        attrs = node.get("attrs", node.get("param", {})) or {}
        names = op_inputs(op, attrs)
        # A node whose inputs do not match its attributes is left for MXNet's loader to reject.
        for n, entry in zip(names, node.get("inputs", []), strict=False):
            src = nodes[entry[0]]
            if n == "data" or src.get("op") != "null":
                continue
            src_attrs = src.setdefault("attrs", {})
            if "__shape__" in src_attrs:
                continue
            shape = _param_shapes(op, attrs).get(n)
            if shape is not None:
                src_attrs["__shape__"] = str(shape)
                changed = True
    return json.dumps(graph) if changed else text


_ORIG_LOAD: dict[str, Callable[..., Any]] = {}


def _load_json(json_str: str) -> mx.sym.Symbol:
    """``mx.sym.load_json`` that annotates Q-op parameter shapes first (see annotate_json)."""
    return _ORIG_LOAD["load_json"](annotate_json(json_str))


def _load(fname: str) -> mx.sym.Symbol:
    """``mx.sym.load`` that annotates Q-op parameter shapes first (local files)."""
    import os

    if isinstance(fname, str) and os.path.isfile(fname):
        with open(fname, encoding="utf-8") as fh:
            return _load_json(fh.read())
    return _ORIG_LOAD["load"](fname)


def install() -> None:
    """Put the wrappers on ``mx.sym`` / ``mx.nd`` (and their ``.op`` modules).

    Called by :func:`binmx._library.load` after every library load, since loading regenerates
    those modules. Idempotent.
    """
    import sys

    for op in _OPS:
        nd_mod, sym_mod = sys.modules["mxnet.ndarray"], sys.modules["mxnet.symbol"]
        cur_nd, cur_sym = getattr(nd_mod, op, None), getattr(sym_mod, op, None)
        if cur_nd is None or cur_sym is None:
            raise ImportError(f"operator {op} is not registered in MXNet (library not loaded?)")
        if cur_nd is not _WRAPPERS["nd"][op]:
            _RAW[op] = (cur_nd, _RAW.get(op, (None, cur_sym))[1])
        if cur_sym is not _WRAPPERS["sym"][op]:
            _RAW[op] = (_RAW[op][0], cur_sym)
        for mod_name, kind in (
            ("mxnet.ndarray", "nd"),
            ("mxnet.ndarray.op", "nd"),
            ("mxnet.symbol", "sym"),
            ("mxnet.symbol.op", "sym"),
        ):
            mod = sys.modules.get(mod_name)
            if mod is not None:
                setattr(mod, op, _WRAPPERS[kind][op])
    for mod_name in ("mxnet.symbol", "mxnet.symbol.symbol"):
        mod = sys.modules[mod_name]
        for fn_name, fn in (("load", _load), ("load_json", _load_json)):
            cur = getattr(mod, fn_name)
            if cur is not fn:
                _ORIG_LOAD.setdefault(fn_name, cur)
                setattr(mod, fn_name, fn)


def QConvolution(*args: Any, **kwargs: Any) -> Any:
    """Binary / k-bit 2-D convolution (NCHW), a drop-in replacement for ``Convolution``.

    Available as ``mx.sym.QConvolution``, ``mx.nd.QConvolution`` and this function (which picks
    one by the type of the first input). Forward, with the quantisers ``Qa`` / ``Qw`` of
    ``act_bit`` / ``weight_bit`` (docs/design.md §3)::

        out[n, f, oy, ox] = alpha_f * sum_{c, i, j} Qa(x)pad[n, g*C/G + c,
                                                            oy*sh - ph + i*dh, ox*sw - pw + j*dw]
                                                   * Qw(W)[f, c, i, j] + bias_f

    ``Qa = Qw = sgn`` for 1 bit (``sgn(v) = -1 if v < 0 else +1``, so ``sgn(0) = +1``): the layer
    then equals ``Convolution(sgn(x), sgn(W))`` exactly and runs xnor + popcount kernels.
    2..31 bits: ``Qa(x) = q(clip(x, 0, 1), k)``, ``Qw(W) = 2 q(tanh(W) / (2 max|tanh W|) + 1/2,
    k) - 1`` with ``q(a, k) = round((2^k - 1) a) / (2^k - 1)`` (DoReFa); 32 bits: identity.
    ``Qa(x)pad`` is padded with ``pad_value``; ``alpha_f = mean |W_f|`` with
    ``scaling_factor``, else 1.

    Gradient (straight-through estimator)::

        d data = conv_transpose(alpha * dy, Qw(W)) * 1[|x| <= grad_cancel]   (iff act_bit < 32)
        d weight = G = dL/dQw(W)                  (identity through the quantiser), or with
                   alpha_f G_f,j + sgn(W_f,j) / n * dalpha_f     scaling_factor, n = C/G*kh*kw
        d bias = sum of dy over (N, OH, OW)

    Arguments:
        data, weight, bias, alpha, in_scale, in_shift, out_scale, out_shift, residual: the
            inputs, positionally in this order (each present only under its attribute, the
            table in docs/design.md §3) or as keywords; ``mx.sym`` creates a missing one as the
            variable ``<name>_<input>``. ``weight`` is float ``(F, C/G, kh, kw)``, or with
            ``binarized_weights_only`` the packed int64 sign words ``(F, kh, kw, ceil(C/G/64))``
            (``act_bit = weight_bit = 1``) or k-bit weight levels
            ``(ceil(F * C/G * kh * kw * weight_bit / 64),)`` (weight_bit 1..8 otherwise;
            :func:`pack_weight`).
        kernel, stride, dilate, pad, num_filter, num_group, no_bias, layout: as
            ``Convolution`` (2-D, NCHW).
        act_bit: activation precision: 1 (sign), 2..31 (DoReFa k-bit) or 32 (float). Default 1.
        weight_bit: weight precision, the same choices; defaults to ``act_bit``.
        scaling_factor: multiply output channel ``f`` by ``alpha_f = mean |W_f|``.
        pad_value: 0 (zero padding, as ``Convolution``), +1 or -1 (a constant border).
        grad_cancel: the straight-through estimator's threshold (inclusive), default 1.0.
        binarized_weights_only: ``weight`` is packed (what the converter writes, weight_bit
            1..8); its gradient is 0; with ``scaling_factor`` the input ``alpha`` follows.
        input_affine, residual, out_packed, in_packed, in_channels: inference-only forms that
            :func:`binmx.fold` makes (this module's docstring); their backward raises.
        name, attr: as for MXNet's own operators.

    Returns ``(N, F, OH, OW)`` float32 (int64 sign words ``(N, OH, OW, ceil(F/64))`` with
    ``out_packed``).

    References:
        - Rastegari et al., "XNOR-Net: ImageNet Classification Using Binary Convolutional Neural
          Networks", ECCV 2016 (``scaling_factor``).
        - Hubara et al., "Binarized Neural Networks", NIPS 2016 (sign with the clipped
          straight-through estimator).
        - Zhou et al., "DoReFa-Net: Training Low Bitwidth Convolutional Neural Networks with Low
          Bitwidth Gradients", arXiv:1606.06160, 2016 (k-bit quantisers).
        - Yang et al., "BMXNet: An Open-Source Binary Neural Network Implementation Based on
          MXNet", ACM Multimedia 2017.
    """
    return _dispatch("QConvolution", args, kwargs)


def QFullyConnected(*args: Any, **kwargs: Any) -> Any:
    """Binary / k-bit fully connected layer, a drop-in replacement for ``FullyConnected``.

    Available as ``mx.sym.QFullyConnected``, ``mx.nd.QFullyConnected`` and this function (which
    picks one by the type of the first input). Forward, on the ``rows x D`` view of ``data``
    (``flatten=True``: ``(N, D)``, D the product of the other axes; ``flatten=False``: every
    axis but the last is a row axis)::

        out[m, h] = alpha_h * sum_d Qa(x)[m, d] * Qw(W)[h, d] + bias_h

    with the quantisers of :func:`QConvolution` (``sgn`` for 1 bit, ``sgn(0) = +1``; DoReFa for
    2..31; identity for 32) and ``alpha_h = mean |W_h|`` with ``scaling_factor``, else 1. With
    ``act_bit = weight_bit = 1`` the layer equals ``FullyConnected(sgn(x), sgn(W))`` exactly
    and runs the xnor GEMM.

    Gradient (straight-through estimator)::

        d data = (alpha * dy) Qw(W) * 1[|x| <= grad_cancel]    (iff act_bit < 32)
        d weight = G = dy^T Qa(x), or with scaling_factor alpha_h G_h,d + sgn(W_h,d) / D * dalpha_h
        d bias = sum of dy over the rows

    Arguments:
        data, weight, bias, alpha, in_scale, in_shift: the inputs, positionally in this order
            (each present only under its attribute, docs/design.md §3) or as keywords;
            ``mx.sym`` creates a missing one as ``<name>_<input>``. ``weight`` is float
            ``(H, D)``, or with ``binarized_weights_only`` the packed int64 sign words
            ``(H, ceil(D/64))`` (``act_bit = weight_bit = 1``) or k-bit weight levels
            ``(ceil(H * D * weight_bit / 64),)`` (weight_bit 1..8 otherwise; :func:`pack_weight`).
        num_hidden, no_bias, flatten: as ``FullyConnected``.
        act_bit: activation precision: 1 (sign), 2..31 (DoReFa k-bit) or 32 (float). Default 1.
        weight_bit: weight precision, the same choices; defaults to ``act_bit``.
        scaling_factor: multiply output unit ``h`` by ``alpha_h = mean |W_h|``.
        grad_cancel: the straight-through estimator's threshold (inclusive), default 1.0.
        binarized_weights_only: ``weight`` is packed (weight_bit 1..8; zero gradient); with
            ``scaling_factor`` the input ``alpha`` follows.
        input_affine: inference-only form :func:`binmx.fold` makes (a folded BatchNorm).
        name, attr: as for MXNet's own operators.

    Returns ``(N, H)`` (``flatten=True``) or ``(..., H)`` float32.

    References:
        - Rastegari et al., "XNOR-Net: ImageNet Classification Using Binary Convolutional Neural
          Networks", ECCV 2016 (``scaling_factor``).
        - Hubara et al., "Binarized Neural Networks", NIPS 2016 (sign with the clipped
          straight-through estimator).
        - Zhou et al., "DoReFa-Net: Training Low Bitwidth Convolutional Neural Networks with Low
          Bitwidth Gradients", arXiv:1606.06160, 2016 (k-bit quantisers).
        - Yang et al., "BMXNet: An Open-Source Binary Neural Network Implementation Based on
          MXNet", ACM Multimedia 2017.
    """
    return _dispatch("QFullyConnected", args, kwargs)


def QActivation(*args: Any, **kwargs: Any) -> Any:
    """Quantised activation: ``sgn(x)``, DoReFa k-bit, or identity with a clipped STE.

    Available as ``mx.sym.QActivation``, ``mx.nd.QActivation`` and this function (which picks
    one by the type of the first input). Forward::

        y = sgn(x)              act_bit = 1   (sgn(v) = -1 if v < 0 else +1, so sgn(0) = +1)
          = q(clip(x, 0, 1), k) act_bit = k in 2..31, q(a, k) = round((2^k - 1) a) / (2^k - 1)
          = x                   act_bit = 32, or backward_only=True

    Gradient (straight-through estimator)::

        d data = dy * 1[|x| <= grad_cancel]   when act_bit < 32 or backward_only, else dy

    ``backward_only=True`` is BMXNet's form before a binary layer: the forward is the identity
    (the following ``QConvolution`` / ``QFullyConnected`` take the sign themselves) and the
    backward cancels the gradient where ``|x| > grad_cancel``.

    Arguments:
        data: the input (any shape, float32).
        act_bit: 1 (sign), 2..31 (DoReFa k-bit) or 32 (identity). Default 1.
        backward_only: identity forward, straight-through backward (see above).
        grad_cancel: the straight-through estimator's threshold (inclusive), default 1.0.
        name, attr: as for MXNet's own operators.

    References:
        - Rastegari et al., "XNOR-Net: ImageNet Classification Using Binary Convolutional Neural
          Networks", ECCV 2016 (``scaling_factor``).
        - Hubara et al., "Binarized Neural Networks", NIPS 2016 (sign with the clipped
          straight-through estimator).
        - Zhou et al., "DoReFa-Net: Training Low Bitwidth Convolutional Neural Networks with Low
          Bitwidth Gradients", arXiv:1606.06160, 2016 (k-bit quantisers).
        - Yang et al., "BMXNet: An Open-Source Binary Neural Network Implementation Based on
          MXNet", ACM Multimedia 2017.
    """
    return _dispatch("QActivation", args, kwargs)


# The mx.sym / mx.nd wrappers carry the same documentation as the dispatchers above.
for _kind in _WRAPPERS.values():
    for _op, _fn in _kind.items():
        _fn.__doc__ = globals()[_op].__doc__


def _dispatch(op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    first = args[0] if args else kwargs.get("data")
    kind = "nd" if isinstance(first, mx.nd.NDArray) else "sym"
    install()
    return _WRAPPERS[kind][op](*args, **kwargs)


def pack_weight(weight: Any, *, act_bit: int = 1, weight_bit: int | None = None) -> Any:
    """Pack a float weight into the uint64 words ``binarized_weights_only=True`` reads for a
    layer with these ``act_bit`` / ``weight_bit`` (docs/design.md §2; ``weight_bit`` defaults
    to ``act_bit``).

    ``act_bit = weight_bit = 1`` (the default), sign words:

    * rank 4 (QConvolution, ``(F, C/g, kh, kw)``) -> int64 ``(F, kh, kw, ceil(C/g / 64))``:
      channel ``c`` of tap ``(i, j)`` is bit ``c % 64`` of word ``c // 64``;
    * rank 2 (QFullyConnected, ``(H, D)``) -> int64 ``(H, ceil(D / 64))``.

    Bit 1 means ``w < 0`` (sgn(w) = -1), ``w >= 0`` (also -0.0) gives bit 0; tail bits are 0.

    Any other layer with ``weight_bit = k`` in 1..8 (a k-bit layer, or 1-bit weights under
    k-bit or float activations), k-bit weight levels: ``lw = rint(B (tanh W / (2 max|tanh W|)
    + 1/2))``, ``B = 2^k - 1``, over the whole tensor (``W >= 0`` for k = 1;
    :func:`binmx.xnor.kbit_weight_levels`), the ``n`` levels in the weight's own order (OIHW,
    or ``[H][D]``) ``k`` bits each, least significant first, in one stream: level ``i`` is
    bits ``i k .. i k + k - 1`` counted from bit 0 of word 0, bit ``b`` being bit ``b % 64``
    of word ``b // 64`` -> int64 ``(ceil(n k / 64),)``, the bits past ``n k`` 0.
    ``Qw(W) = 2 lw / B - 1`` exactly. Wider weights (``weight_bit`` 9..32) are not packed
    (ValueError).

    Words are uint64 bit patterns stored as int64 (MXNet has no uint64). Returns an NDArray for
    an NDArray input, else a NumPy array. The input is not modified.
    """
    from binmx import xnor

    is_nd = isinstance(weight, mx.nd.NDArray)
    w = weight.asnumpy() if is_nd else np.asarray(weight)
    if w.dtype.kind != "f":
        raise TypeError(f"Expected `weight` to be a float array, got dtype {w.dtype}")
    for name, value in (("act_bit", act_bit), ("weight_bit", weight_bit)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1
        ):
            raise ValueError(f"Expected `{name}` to be a positive int, got {value!r}")
    wbit = act_bit if weight_bit is None else int(weight_bit)
    if wbit > 8:
        raise ValueError(
            f"weight_bit={wbit} weights are not packed (1..8 bits are); they stay float"
        )
    if w.ndim not in (2, 4):
        raise ValueError(
            f"Expected `weight` of rank 4 (QConvolution) or 2 (QFullyConnected), got shape "
            f"{w.shape}"
        )
    if (act_bit, wbit) != (1, 1):
        levels = xnor.kbit_weight_levels(np.ascontiguousarray(w, dtype=np.float32), wbit)
        packed = xnor.pack_kbit_levels(levels.reshape(-1), wbit)
    elif w.ndim == 4:
        f, c, kh, kw = w.shape
        rows = np.ascontiguousarray(w.transpose(0, 2, 3, 1).reshape(f * kh * kw, c), np.float32)
        packed = xnor.pack_bits(rows).reshape(f, kh, kw, -1)
    elif w.ndim == 2:
        packed = xnor.pack_bits(np.ascontiguousarray(w, dtype=np.float32))
    if is_nd:
        return mx.nd.array(packed, dtype=np.int64, ctx=weight.context)
    return packed
