"""Gluon blocks for binmx's operators: ``QConv2D``, ``QDense``, ``QActivation``.

They mirror ``gluon.nn.Conv2D`` / ``gluon.nn.Dense`` (same positional arguments and defaults)
plus the binary attributes as keyword-only arguments, and call ``F.QConvolution`` /
``F.QFullyConnected`` / ``F.QActivation`` so they hybridize and export: ``export`` writes a
symbol JSON with ``QConvolution`` nodes that ``SymbolBlock.imports`` / ``mx.sym.load`` read
back once ``binmx`` is imported.

Semantics (docs/design.md §3, :mod:`binmx.reference`): with ``act_bit = weight_bit = 1`` the layer
computes ``Convolution(sgn x, sgn W)`` (``sgn(0) = +1``) exactly with xnor kernels, times
``alpha_f = mean|W_f|`` when ``scaling_factor``, plus bias; gradients use the straight-through
estimator masked by ``1[|x| <= grad_cancel]``. ``binarized_weights_only=True`` makes the weight
a packed int64 parameter (inference only, ``grad_req='null'``): the sign words
``(channels, kh, kw, ceil(in_channels/groups/64))`` for ``act_bit = weight_bit = 1``, else the
k-bit weight levels ``(ceil(n * weight_bit / 64),)`` of the ``n`` weights (weight_bit 1..8;
:func:`binmx.pack_weight`), and, with ``scaling_factor``, adds an ``alpha`` parameter.
"""

from __future__ import annotations

from typing import Any

from mxnet.gluon import HybridBlock
from mxnet.gluon.nn import Activation

__all__ = ["QActivation", "QConv2D", "QDense"]


def _pair(name: str, value: Any) -> tuple[int, int]:
    if isinstance(value, bool):
        raise TypeError(f"Expected `{name}` to be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        return (value, value)
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        return (int(value[0]), int(value[1]))
    raise ValueError(f"Expected `{name}` to be an int or a pair of ints, got {value!r}")


def _check_bits(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 32:
        raise ValueError(f"Expected `{name}` to be an int in [1, 32], got {value!r}")
    return value


def _check_packed(packed: bool, weight_bit: int) -> None:
    if packed and weight_bit > 8:
        raise ValueError(
            "binarized_weights_only=True needs weight_bit <= 8 (wider weights stay float), got "
            f"weight_bit={weight_bit}"
        )


def _level_words(n: int, weight_bit: int) -> int:
    """int64 words of the k-bit level stream of n weights (0: unknown, deferred)."""
    return (n * weight_bit + 63) // 64 if n else 0


class QConv2D(HybridBlock):
    r"""Binary / k-bit 2-D convolution (NCHW), the Gluon form of ``QConvolution``.

    Forward, with the activation and weight quantisers ``Qa`` / ``Qw`` of ``act_bit`` /
    ``weight_bit`` (docs/design.md §3)::

        out[n, f, oy, ox] = alpha_f * sum_{c, i, j} Qa(x)pad[n, g*C/groups + c,
                                                            oy*sh - ph + i*dh, ox*sw - pw + j*dw]
                                                   * Qw(W)[f, c, i, j] + bias_f

    where ``Qa = Qw = sgn`` for 1 bit (``sgn(v) = -1 if v < 0 else +1``, so ``sgn(0) = +1``),
    ``q(clip(x, 0, 1), k)`` / ``2 q(tanh(W) / (2 max|tanh W|) + 1/2, k) - 1`` for k = 2..31
    (``q(a, k) = round((2^k - 1) a) / (2^k - 1)``) and the identity for 32; ``Qa(x)pad`` is
    padded with ``pad_value``; ``alpha_f = mean |W_f|`` with ``scaling_factor``, else 1. With
    ``act_bit = weight_bit = 1`` every term is an integer: the layer equals
    ``Conv2D(sgn(x), sgn(W))`` exactly and runs xnor + popcount kernels.

    Gradient (straight-through estimator)::

        dx = conv_transpose(alpha * dy, Qw(W)) * 1[|x| <= grad_cancel]   (mask iff act_bit < 32)
        dW = dL/dQw(W)                              (identity through the quantiser), or with
             alpha_f dL/dQw(W)_f,j + sgn(W_f,j) / n * dalpha_f   scaling_factor (n = C/g*kh*kw)

    Arguments:
        channels, kernel_size, strides, padding, dilation, groups, layout, activation,
        use_bias, weight_initializer, bias_initializer, in_channels: as ``nn.Conv2D``
            (``layout`` must be ``"NCHW"``).
        act_bit: activation precision: 1 (sign), 2..31 (DoReFa k-bit) or 32 (float).
        weight_bit: weight precision, the same choices; defaults to ``act_bit``.
        binarized_weights_only: the weight is the packed int64 parameter the converter
            writes (inference only, ``grad_req='null'``): ``(channels, kh, kw,
            ceil(in_channels/groups/64))`` sign words for ``act_bit = weight_bit = 1``, else
            ``(ceil(channels * in_channels/groups * kh * kw * weight_bit / 64),)`` k-bit weight
            levels; with ``scaling_factor`` an ``alpha`` parameter ``(channels,)`` is added.
            Needs ``weight_bit <= 8``.
        scaling_factor: multiply output channel ``f`` by ``alpha_f = mean |W_f|``.
        pad_value: 0 (zero padding, as ``Conv2D``), +1 or -1 (a constant border).
        grad_cancel: the straight-through estimator's threshold (inclusive), default 1.0.
        prefix, params: as every ``HybridBlock``.

    Input ``(N, C, H, W)`` float32; output ``(N, channels, OH, OW)`` float32.

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

    def __init__(
        self,
        channels: int,
        kernel_size: int | tuple[int, int],
        strides: int | tuple[int, int] = (1, 1),
        padding: int | tuple[int, int] = (0, 0),
        dilation: int | tuple[int, int] = (1, 1),
        groups: int = 1,
        layout: str = "NCHW",
        activation: str | None = None,
        use_bias: bool = True,
        weight_initializer: Any = None,
        bias_initializer: Any = "zeros",
        in_channels: int = 0,
        *,
        act_bit: int = 1,
        weight_bit: int | None = None,
        binarized_weights_only: bool = False,
        scaling_factor: bool = False,
        pad_value: int = 0,
        grad_cancel: float = 1.0,
        prefix: str | None = None,
        params: Any = None,
    ) -> None:
        super().__init__(prefix=prefix, params=params)
        if layout != "NCHW":
            raise ValueError(f"Expected `layout` to be 'NCHW', got {layout!r}")
        if pad_value not in (0, 1, -1):
            raise ValueError(f"Expected `pad_value` to be 0, 1 or -1, got {pad_value!r}")
        act_bit = _check_bits("act_bit", act_bit)
        weight_bit = _check_bits("weight_bit", act_bit if weight_bit is None else weight_bit)
        _check_packed(binarized_weights_only, weight_bit)
        kernel = _pair("kernel_size", kernel_size)
        if groups < 1 or channels % groups != 0 or in_channels % groups != 0:
            raise ValueError(
                f"Expected `channels` ({channels}) and `in_channels` ({in_channels}) to be "
                f"divisible by `groups` ({groups})"
            )
        self._channels = channels
        self._in_channels = in_channels
        self._kwargs: dict[str, Any] = {
            "kernel": kernel,
            "stride": _pair("strides", strides),
            "dilate": _pair("dilation", dilation),
            "pad": _pair("padding", padding),
            "num_filter": channels,
            "num_group": groups,
            "no_bias": not use_bias,
            "layout": layout,
            "act_bit": act_bit,
            "weight_bit": weight_bit,
            "binarized_weights_only": bool(binarized_weights_only),
            "scaling_factor": bool(scaling_factor),
            "pad_value": pad_value,
            "grad_cancel": float(grad_cancel),
        }
        with self.name_scope():
            cg = in_channels // groups
            if binarized_weights_only and (act_bit, weight_bit) != (1, 1):
                n = channels * cg * kernel[0] * kernel[1]
                self.weight = self.params.get(
                    "weight",
                    shape=(_level_words(n, weight_bit),),
                    dtype="int64",
                    init="zeros",
                    grad_req="null",
                    allow_deferred_init=True,
                )
            elif binarized_weights_only:
                words = (cg + 63) // 64 if in_channels else 0
                self.weight = self.params.get(
                    "weight",
                    shape=(channels, kernel[0], kernel[1], words),
                    dtype="int64",
                    init="zeros",
                    grad_req="null",
                    allow_deferred_init=True,
                )
            else:
                self.weight = self.params.get(
                    "weight",
                    shape=(channels, cg, kernel[0], kernel[1]),
                    init=weight_initializer,
                    allow_deferred_init=True,
                )
            self.bias = (
                self.params.get(
                    "bias", shape=(channels,), init=bias_initializer, allow_deferred_init=True
                )
                if use_bias
                else None
            )
            self.alpha = (
                self.params.get(
                    "alpha",
                    shape=(channels,),
                    init="ones",
                    grad_req="null",
                    allow_deferred_init=True,
                )
                if binarized_weights_only and scaling_factor
                else None
            )
            self.act = Activation(activation, prefix=activation + "_") if activation else None

    def hybrid_forward(self, F, x, weight, bias=None, alpha=None):
        inputs = [x, weight] + ([bias] if bias is not None else [])
        inputs += [alpha] if alpha is not None else []
        out = F.QConvolution(*inputs, name="fwd", **self._kwargs)
        return self.act(out) if self.act is not None else out

    def __repr__(self) -> str:
        k = self._kwargs
        return (
            f"{self.__class__.__name__}({self._in_channels or None} -> {self._channels}, "
            f"kernel_size={k['kernel']}, stride={k['stride']}, padding={k['pad']}, "
            f"act_bit={k['act_bit']}, weight_bit={k['weight_bit']}, "
            f"binarized_weights_only={k['binarized_weights_only']})"
        )


class QDense(HybridBlock):
    r"""Binary / k-bit fully connected layer, the Gluon form of ``QFullyConnected``.

    Forward, on the ``rows x D`` view of the input (``flatten=True``: ``(N, D)`` with ``D`` the
    product of the other axes; ``flatten=False``: all but the last axis are rows)::

        out[m, h] = alpha_h * sum_d Qa(x)[m, d] * Qw(W)[h, d] + bias_h

    with the quantisers of :class:`QConv2D` (``sgn`` for 1 bit, ``sgn(0) = +1``; DoReFa for
    2..31; identity for 32) and ``alpha_h = mean |W_h|`` with ``scaling_factor``, else 1. With
    ``act_bit = weight_bit = 1`` the layer equals ``Dense(sgn(x), sgn(W))`` exactly and runs
    the xnor GEMM.

    Gradient (straight-through estimator)::

        dx = (alpha * dy) Qw(W) * 1[|x| <= grad_cancel]    (mask iff act_bit < 32)
        dW = dy^T Qa(x), or with scaling_factor alpha_h G_h,d + sgn(W_h,d) / D * dalpha_h

    Arguments:
        units, activation, use_bias, flatten, dtype, weight_initializer, bias_initializer,
        in_units: as ``nn.Dense`` (``dtype`` must be ``"float32"``).
        act_bit: activation precision: 1 (sign), 2..31 (DoReFa k-bit) or 32 (float).
        weight_bit: weight precision, the same choices; defaults to ``act_bit``.
        binarized_weights_only: the weight is the packed int64 parameter the converter
            writes (inference only): ``(units, ceil(in_units/64))`` sign words for
            ``act_bit = weight_bit = 1``, else ``(ceil(units * in_units * weight_bit / 64),)``
            k-bit weight levels; with ``scaling_factor`` an ``alpha`` parameter ``(units,)`` is
            added. Needs ``weight_bit <= 8``.
        scaling_factor: multiply output unit ``h`` by ``alpha_h = mean |W_h|``.
        grad_cancel: the straight-through estimator's threshold (inclusive), default 1.0.
        prefix, params: as every ``HybridBlock``.

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

    def __init__(
        self,
        units: int,
        activation: str | None = None,
        use_bias: bool = True,
        flatten: bool = True,
        dtype: str = "float32",
        weight_initializer: Any = None,
        bias_initializer: Any = "zeros",
        in_units: int = 0,
        *,
        act_bit: int = 1,
        weight_bit: int | None = None,
        binarized_weights_only: bool = False,
        scaling_factor: bool = False,
        grad_cancel: float = 1.0,
        prefix: str | None = None,
        params: Any = None,
    ) -> None:
        super().__init__(prefix=prefix, params=params)
        if dtype != "float32":
            raise ValueError(f"Expected `dtype` to be 'float32', got {dtype!r}")
        act_bit = _check_bits("act_bit", act_bit)
        weight_bit = _check_bits("weight_bit", act_bit if weight_bit is None else weight_bit)
        _check_packed(binarized_weights_only, weight_bit)
        self._units = units
        self._in_units = in_units
        self._kwargs: dict[str, Any] = {
            "num_hidden": units,
            "no_bias": not use_bias,
            "flatten": bool(flatten),
            "act_bit": act_bit,
            "weight_bit": weight_bit,
            "binarized_weights_only": bool(binarized_weights_only),
            "scaling_factor": bool(scaling_factor),
            "grad_cancel": float(grad_cancel),
        }
        with self.name_scope():
            if binarized_weights_only and (act_bit, weight_bit) != (1, 1):
                self.weight = self.params.get(
                    "weight",
                    shape=(_level_words(units * in_units, weight_bit),),
                    dtype="int64",
                    init="zeros",
                    grad_req="null",
                    allow_deferred_init=True,
                )
            elif binarized_weights_only:
                words = (in_units + 63) // 64 if in_units else 0
                self.weight = self.params.get(
                    "weight",
                    shape=(units, words),
                    dtype="int64",
                    init="zeros",
                    grad_req="null",
                    allow_deferred_init=True,
                )
            else:
                self.weight = self.params.get(
                    "weight",
                    shape=(units, in_units),
                    init=weight_initializer,
                    allow_deferred_init=True,
                )
            self.bias = (
                self.params.get(
                    "bias", shape=(units,), init=bias_initializer, allow_deferred_init=True
                )
                if use_bias
                else None
            )
            self.alpha = (
                self.params.get(
                    "alpha", shape=(units,), init="ones", grad_req="null", allow_deferred_init=True
                )
                if binarized_weights_only and scaling_factor
                else None
            )
            self.act = Activation(activation, prefix=activation + "_") if activation else None

    def hybrid_forward(self, F, x, weight, bias=None, alpha=None):
        inputs = [x, weight] + ([bias] if bias is not None else [])
        inputs += [alpha] if alpha is not None else []
        out = F.QFullyConnected(*inputs, name="fwd", **self._kwargs)
        return self.act(out) if self.act is not None else out

    def __repr__(self) -> str:
        k = self._kwargs
        return (
            f"{self.__class__.__name__}({self._in_units or None} -> {self._units}, "
            f"act_bit={k['act_bit']}, weight_bit={k['weight_bit']}, "
            f"binarized_weights_only={k['binarized_weights_only']})"
        )


class QActivation(HybridBlock):
    r"""Quantised activation: ``sgn(x)`` (act_bit 1), DoReFa k-bit, or identity.

    Forward::

        y = sgn(x)             act_bit = 1   (sgn(v) = -1 if v < 0 else +1, so sgn(0) = +1)
          = q(clip(x, 0, 1), k) act_bit = k in 2..31, q(a, k) = round((2^k - 1) a) / (2^k - 1)
          = x                  act_bit = 32, or backward_only=True

    Gradient (straight-through estimator)::

        dx = dy * 1[|x| <= grad_cancel]   when act_bit < 32 or backward_only, else dy

    ``backward_only=True`` is BMXNet's form: the forward is the identity and the following
    ``QConv2D`` / ``QDense`` (which quantise their input themselves) see the unquantised
    values, while the backward still cancels the gradient where ``|x| > grad_cancel``.

    Arguments:
        act_bit: 1 (sign), 2..31 (DoReFa k-bit) or 32 (identity). Default 1.
        backward_only: identity forward, straight-through backward (see above).
        grad_cancel: the straight-through estimator's threshold (inclusive), default 1.0.
        prefix, params: as every ``HybridBlock``.

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

    def __init__(
        self,
        act_bit: int = 1,
        backward_only: bool = False,
        grad_cancel: float = 1.0,
        *,
        prefix: str | None = None,
        params: Any = None,
    ) -> None:
        super().__init__(prefix=prefix, params=params)
        self._kwargs = {
            "act_bit": _check_bits("act_bit", act_bit),
            "backward_only": bool(backward_only),
            "grad_cancel": float(grad_cancel),
        }

    def hybrid_forward(self, F, x):
        return F.QActivation(x, name="fwd", **self._kwargs)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self._kwargs})"
