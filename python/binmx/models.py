"""Model definitions shared by the examples, benchmarks and tests: BMXNet's binary networks.

Both builders return an ``mx.sym.Symbol`` ending in ``SoftmaxOutput(name="softmax")`` and take
``binary=False`` for the float network of exactly the same shape (same layer names, same
parameter shapes), so binary and float runs compare like with like.

Binary layers follow BMXNet (hpi-xnor/mxnet, smd_hpi/): first and last layer float, every
binary layer preceded by ``BatchNorm -> QActivation(backward_only=True)``. With
``act_bit = weight_bit = 1`` a ``QConvolution`` computes ``Convolution(sgn(x), sgn(W))``
(docs/design.md §3); ``QActivation(backward_only=True)`` is the identity forward and the
straight-through gradient ``dx = dy * 1[|x| <= 1]`` backward, the sign itself being taken by
the binary layer. Rastegari et al., "XNOR-Net" (2016); Yang et al., "BMXNet" (2017).
"""

from __future__ import annotations

import functools

import mxnet as mx

__all__ = ["RESNET_UNITS", "binary_lenet", "resnet"]

#: Residual units per stage for each supported depth (basic blocks).
RESNET_UNITS: dict[int, tuple[int, int, int, int]] = {
    10: (1, 1, 1, 1),
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
}

_STEMS = ("auto", "imagenet", "cifar", "int8")
_LENET_STEMS = ("float", "int8")


def _check_bits(act_bit: int, weight_bit: int) -> dict[str, int]:
    for key, value in (("act_bit", act_bit), ("weight_bit", weight_bit)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 32:
            raise ValueError(f"Expected `{key}` to be an int in 1..32, got {value!r}")
    return {"act_bit": act_bit, "weight_bit": weight_bit}


def binary_lenet(
    *, binary: bool = True, act_bit: int = 1, weight_bit: int = 1, stem: str = "float"
) -> mx.sym.Symbol:
    """BMXNet's binary LeNet (MNIST, 28x28x1 input, 10 classes).

    Layers (``binary=False`` replaces ``QActivation -> QConvolution / QFullyConnected`` by
    ``tanh -> Convolution / FullyConnected``)::

        conv1  Convolution 5x5x64 (float) -> bn1 -> relu1 -> pool1 max 2x2/2
        bn2 -> qact2 QActivation(backward_only) -> conv2 QConvolution 5x5x64 (bias)
        pool2 max 2x2/2 -> flatten -> bn3 -> qact3 -> fc1 QFullyConnected 1000 (no bias)
        bn4 -> tanh4 -> fc2 FullyConnected 10 (float) -> softmax

    The same graph as ``lenet_symbol`` in ``examples/train_mnist.py``; converted, its
    parameters take <= 206,511 bytes (the original BMXNet result).

    ``stem="int8"`` makes conv1 a ``QConvolution`` with ``act_bit = weight_bit = 8`` (trained
    quantisation-aware like every Q layer; the runtime and the operator run it on the integer
    kernels, docs/design.md §3). Its activation quantiser reads ``clip(x, 0, 1)``: the input
    must be pixel / 255 (as ``binmx.data`` gives), which it then quantises without loss.
    """
    bits = _check_bits(act_bit, weight_bit)
    if stem not in _LENET_STEMS:
        raise ValueError(f"Expected `stem` in {_LENET_STEMS}, got {stem!r}")
    data = mx.sym.Variable("data")
    if stem == "int8" and binary:
        x = mx.sym.QConvolution(
            data, kernel=(5, 5), num_filter=64, act_bit=8, weight_bit=8, name="conv1"
        )
    else:
        x = mx.sym.Convolution(data, kernel=(5, 5), num_filter=64, name="conv1")
    x = mx.sym.BatchNorm(x, fix_gamma=False, name="bn1")
    x = mx.sym.Activation(x, act_type="relu", name="relu1")
    x = mx.sym.Pooling(x, pool_type="max", kernel=(2, 2), stride=(2, 2), name="pool1")
    x = mx.sym.BatchNorm(x, fix_gamma=False, name="bn2")
    if binary:
        x = mx.sym.QActivation(x, act_bit=act_bit, backward_only=True, name="qact2")
        x = mx.sym.QConvolution(x, kernel=(5, 5), num_filter=64, **bits, name="conv2")
    else:
        x = mx.sym.Activation(x, act_type="tanh", name="tanh2")
        x = mx.sym.Convolution(x, kernel=(5, 5), num_filter=64, name="conv2")
    x = mx.sym.Pooling(x, pool_type="max", kernel=(2, 2), stride=(2, 2), name="pool2")
    x = mx.sym.Flatten(x, name="flatten")
    x = mx.sym.BatchNorm(x, fix_gamma=False, name="bn3")
    if binary:
        x = mx.sym.QActivation(x, act_bit=act_bit, backward_only=True, name="qact3")
        x = mx.sym.QFullyConnected(x, num_hidden=1000, no_bias=True, **bits, name="fc1")
    else:
        x = mx.sym.Activation(x, act_type="tanh", name="tanh3")
        x = mx.sym.FullyConnected(x, num_hidden=1000, no_bias=True, name="fc1")
    x = mx.sym.BatchNorm(x, fix_gamma=False, name="bn4")
    x = mx.sym.Activation(x, act_type="tanh", name="tanh4")
    x = mx.sym.FullyConnected(x, num_hidden=10, name="fc2")
    return mx.sym.SoftmaxOutput(x, name="softmax")


def _bn(x: mx.sym.Symbol, name: str) -> mx.sym.Symbol:
    return mx.sym.BatchNorm(x, fix_gamma=False, momentum=0.9, eps=2e-5, name=name)


def _conv(x: mx.sym.Symbol, *, binary: bool, bits: dict[str, int], name: str, **kw):
    if binary:
        return mx.sym.QConvolution(x, no_bias=True, name=name, **bits, **kw)
    return mx.sym.Convolution(x, no_bias=True, name=name, **kw)


def _act(x: mx.sym.Symbol, *, binary: bool, bits: dict[str, int], name: str):
    if binary:
        return mx.sym.QActivation(x, act_bit=bits["act_bit"], backward_only=True, name=name)
    return mx.sym.Activation(x, act_type="relu", name=name)


def residual_unit(
    x: mx.sym.Symbol,
    num_filter: int,
    stride: int,
    dim_match: bool,
    *,
    binary: bool = True,
    act_bit: int = 1,
    weight_bit: int = 1,
    name: str,
) -> mx.sym.Symbol:
    """One pre-activation basic block, BMXNet layout::

        act1 = QActivation(BatchNorm bn1 (x))          (float: relu)
        conv1 = QConvolution 3x3 / stride (act1)       (no bias)
        conv2 = QConvolution 3x3 (QActivation(BatchNorm bn2 (conv1)))
        out  = conv2 + (x if dim_match else QConvolution 1x1 / stride (act1))   ({name}_add)

    Layer names: ``{name}_bn1``, ``{name}_qact1``, ``{name}_conv1``, ``{name}_bn2``,
    ``{name}_qact2``, ``{name}_conv2``, ``{name}_sc`` (the downsampling shortcut),
    ``{name}_add`` (the residual ``elemwise_add``; the example's ``+`` names it ``_plusN``).
    """
    bits = _check_bits(act_bit, weight_bit)
    common = {"binary": binary, "bits": bits}
    act1 = _act(_bn(x, f"{name}_bn1"), name=f"{name}_qact1", **common)
    conv1 = _conv(
        act1,
        name=f"{name}_conv1",
        kernel=(3, 3),
        stride=(stride, stride),
        pad=(1, 1),
        num_filter=num_filter,
        **common,
    )
    act2 = _act(_bn(conv1, f"{name}_bn2"), name=f"{name}_qact2", **common)
    conv2 = _conv(
        act2,
        name=f"{name}_conv2",
        kernel=(3, 3),
        stride=(1, 1),
        pad=(1, 1),
        num_filter=num_filter,
        **common,
    )
    if dim_match:
        shortcut = x
    else:
        shortcut = _conv(
            act1,
            name=f"{name}_sc",
            kernel=(1, 1),
            stride=(stride, stride),
            num_filter=num_filter,
            **common,
        )
    return mx.sym.elemwise_add(conv2, shortcut, name=f"{name}_add")


def resnet(
    *,
    depth: int = 18,
    num_classes: int = 1000,
    image_shape: tuple[int, int, int] = (3, 224, 224),
    width: int = 64,
    binary: bool = True,
    act_bit: int = 1,
    weight_bit: int = 1,
    stem: str = "auto",
    stem_stride: int = 1,
) -> mx.sym.Symbol:
    """Pre-activation ResNet in BMXNet's binary layout (float first conv and last FC).

    ::

        data -> bn_data (BatchNorm, fix_gamma) -> conv0 (float Convolution, no bias)
            stem "imagenet": conv0 7x7/2 pad 3 -> bn0 -> relu0 -> pool0 max 3x3/2 pad 1
            stem "cifar":    conv0 3x3/``stem_stride`` pad 1
        stages 1..4 with ``width * 2**s`` channels, RESNET_UNITS[depth] units each
            (:func:`residual_unit`; the first unit of stages 2..4 has stride 2 and a 1x1
            binary shortcut conv on its first activation), named ``stage{s}_unit{u}``
        bn1 -> relu1 -> pool1 global average -> flatten -> fc (float, ``num_classes``) -> softmax

    ``stem="auto"`` picks "imagenet" for inputs of 64 pixels or more, else "cifar".
    ``stem="int8"``: the "auto" geometry with conv0 a ``QConvolution`` at ``act_bit =
    weight_bit = 8`` (the integer int8 kernel, docs/design.md §3) reading the input directly,
    without bn_data: its quantiser takes ``clip(x, 0, 1)``, so the input must be pixel / 255
    (``binmx.data``'s Fashion-MNIST / CIFAR-10), which it quantises without loss. With
    ``binary=False`` conv0 is a float ``Convolution`` on the same input (same parameters).
    ``binary=False`` gives the float network of the same shape: ``Activation(relu)`` and
    ``Convolution`` where the binary one has ``QActivation`` and ``QConvolution``.
    ``image_shape`` (C, H, W) only selects the stem; the symbol accepts any input size that
    the stem and strides allow. This is ``resnet_symbol`` of ``examples/train_resnet.py``.
    """
    if depth not in RESNET_UNITS:
        raise ValueError(f"Expected `depth` in {sorted(RESNET_UNITS)}, got {depth!r}")
    if stem not in _STEMS:
        raise ValueError(f"Expected `stem` in {_STEMS}, got {stem!r}")
    if len(tuple(image_shape)) != 3:
        raise ValueError(f"Expected `image_shape` to be (C, H, W), got {image_shape!r}")
    for key, value in (
        ("num_classes", num_classes),
        ("width", width),
        ("stem_stride", stem_stride),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Expected `{key}` to be a positive int, got {value!r}")
    bits = _check_bits(act_bit, weight_bit)
    int8 = stem == "int8"
    if stem in ("auto", "int8"):
        stem = "imagenet" if min(image_shape[1:]) >= 64 else "cifar"

    data = mx.sym.Variable("data")
    if int8:
        x = data  # the 8-bit quantiser reads pixel / 255 exactly; no bn_data
    else:
        x = mx.sym.BatchNorm(data, fix_gamma=True, momentum=0.9, eps=2e-5, name="bn_data")
    conv0 = mx.sym.Convolution
    if int8 and binary:
        conv0 = functools.partial(mx.sym.QConvolution, act_bit=8, weight_bit=8)
    if stem == "imagenet":
        x = conv0(
            x,
            kernel=(7, 7),
            stride=(2, 2),
            pad=(3, 3),
            num_filter=width,
            no_bias=True,
            name="conv0",
        )
        x = mx.sym.Activation(_bn(x, "bn0"), act_type="relu", name="relu0")
        x = mx.sym.Pooling(
            x, kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="max", name="pool0"
        )
    else:
        x = conv0(
            x,
            kernel=(3, 3),
            stride=(stem_stride, stem_stride),
            pad=(1, 1),
            num_filter=width,
            no_bias=True,
            name="conv0",
        )
    for stage, units in enumerate(RESNET_UNITS[depth]):
        for unit in range(units):
            x = residual_unit(
                x,
                width * 2**stage,
                2 if (unit == 0 and stage > 0) else 1,
                dim_match=(unit > 0 or stage == 0),
                binary=binary,
                name=f"stage{stage + 1}_unit{unit + 1}",
                **bits,
            )
    x = mx.sym.Activation(_bn(x, "bn1"), act_type="relu", name="relu1")
    x = mx.sym.Pooling(x, global_pool=True, kernel=(7, 7), pool_type="avg", name="pool1")
    x = mx.sym.Flatten(x, name="flatten")
    x = mx.sym.FullyConnected(x, num_hidden=num_classes, name="fc")
    return mx.sym.SoftmaxOutput(x, name="softmax")
