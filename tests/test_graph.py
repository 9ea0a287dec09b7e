"""binmx._graph: the attribute readers, the Q operators' input order and the graph class."""

from __future__ import annotations

import itertools

import binmx
import mxnet as mx
import numpy as np
import pytest
from binmx._graph import (
    Graph,
    bits,
    bool_attr,
    input_index,
    int_attr,
    op_inputs,
    parse_ints,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("True", True),
        ("true", True),
        ("TRUE", True),  # MXNet's bool parameters are case-insensitive
        ("1", True),
        (" 'True' ", True),  # blanks and quotes, as the operators' own parser strips them
        ("False", False),
        ("false", False),
        ("FaLsE", False),
        ("0", False),
        (True, True),
        (False, False),
        (1, True),
        (0, False),
        (np.bool_(True), True),
    ],
)
def test_bool_attr_follows_mxnet(text: object, expected: bool) -> None:
    assert bool_attr({"k": text}, "k") is expected
    assert bool_attr({"k": text}, "k", True) is expected


@pytest.mark.parametrize("text", [None, "", "None"])
def test_bool_attr_absent_gives_default(text: object) -> None:
    assert bool_attr({"k": text}, "k") is False
    assert bool_attr({"k": text}, "k", True) is True
    assert bool_attr({}, "k", True) is True


@pytest.mark.parametrize("text", ["yes", "2", "tru", 2, 1.5])
def test_bool_attr_rejects_other_values(text: object) -> None:
    with pytest.raises(ValueError, match="Expected `k` to be True or False"):
        bool_attr({"k": text}, "k")


def test_int_attr_and_bits() -> None:
    assert int_attr({"a": " 3 "}, "a", 1) == 3
    assert int_attr({}, "a", 7) == 7
    with pytest.raises(ValueError, match="attribute a='x' is not an integer"):
        int_attr({"a": "x"}, "a", 1)
    assert bits({}) == (1, 1)
    assert bits({"act_bit": "2"}) == (2, 2)
    assert bits({"act_bit": "2", "weight_bit": "1"}) == (2, 1)


def test_parse_ints() -> None:
    assert parse_ints("(3, 3)") == (3, 3)
    assert parse_ints("[3,3]") == (3, 3)
    assert parse_ints("3") == (3,)
    assert parse_ints("(3L, 3L)") == (3, 3)
    assert parse_ints(None) is None
    assert parse_ints("None") is None
    assert parse_ints("()") is None
    assert parse_ints("(a, 3)") is None


def _table(op: str, flags: dict[str, bool]) -> list[str]:
    """docs/design.md §3's input table, written out independently of op_inputs."""
    names = ["data", "weight"]
    if not flags["no_bias"]:
        names.append("bias")
    if flags["binarized_weights_only"] and flags["scaling_factor"]:
        names.append("alpha")
    if flags["input_affine"]:
        names += ["in_scale", "in_shift"]
    if op == "QConvolution" and flags["out_packed"]:
        names += ["out_scale", "out_shift"]
    if op == "QConvolution" and flags["residual"]:
        names.append("residual")
    return names


_FLAGS = (
    "no_bias",
    "binarized_weights_only",
    "scaling_factor",
    "input_affine",
    "out_packed",
    "residual",
)


@pytest.mark.parametrize("op", ["QConvolution", "QFullyConnected"])
def test_op_inputs_every_attribute_combination(op: str) -> None:
    for values in itertools.product((False, True), repeat=len(_FLAGS)):
        flags = dict(zip(_FLAGS, values, strict=True))
        attrs = {k: str(v) for k, v in flags.items()}
        want = _table(op, flags)
        assert op_inputs(op, attrs) == want, attrs
        for i, name in enumerate(want):
            assert input_index(op, attrs, name) == i
        assert input_index(op, attrs, "nonexistent") is None
    assert op_inputs("QActivation", {"act_bit": "1"}) == ["data"]
    with pytest.raises(ValueError, match="Expected a Q operator"):
        op_inputs("Convolution", {})


def test_op_inputs_is_the_public_one() -> None:
    assert binmx.ops.op_inputs is op_inputs


def _conv_graph() -> Graph:
    data = mx.sym.Variable("data")
    conv = mx.sym.QConvolution(data, kernel=(3, 3), num_filter=4, no_bias=True, name="q")
    return Graph.from_symbol(conv)


def test_graph_named_inputs_keep_the_order() -> None:
    graph = _conv_graph()
    (qid,) = [i for i, n in graph.nodes.items() if n["op"] == "QConvolution"]
    inputs = graph.named_inputs(qid)
    assert list(inputs) == ["data", "weight"]
    attrs = graph.nodes[qid]["attrs"]
    attrs["residual"] = "True"
    attrs["input_affine"] = "True"
    inputs["residual"] = [graph.add_variable("res", (1, 4, 1, 1)), 0, 0]
    inputs["in_scale"] = [graph.add_variable("s", (3,)), 0, 0]
    inputs["in_shift"] = [graph.add_variable("t", (3,)), 0, 0]
    graph.set_named_inputs(qid, inputs)
    assert graph.input_names(qid) == ["data", "q_weight", "s", "t", "res"]
    with pytest.raises(ValueError, match="do not match its attributes"):
        graph.set_named_inputs(qid, {"data": inputs["data"]})
    sym = graph.to_symbol()
    assert sym.list_arguments() == ["data", "q_weight", "s", "t", "res"]


def test_graph_unique_names_and_copy() -> None:
    data = mx.sym.Variable("data")
    sym = mx.sym.QConvolution(data, kernel=(3, 3), num_filter=4, no_bias=True, name="q")
    before = sym.tojson()
    graph = Graph.from_symbol(sym)
    graph.reserve(["x"])
    assert graph.unique_name("q") == "q_"
    assert graph.unique_name("q") == "q__"
    assert graph.unique_name("x") == "x_"
    assert graph.unique_name("y") == "y"
    nid = graph.add_variable("data", (2,))
    assert graph.nodes[nid]["name"] == "data_"
    for node in graph.nodes.values():
        node["attrs"] = {"changed": "1"}
    assert sym.tojson() == before  # the graph is a copy
