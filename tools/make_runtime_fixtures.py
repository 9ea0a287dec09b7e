"""Write the runtime's stored fixtures: converted models, inputs and MXNet + binmx's outputs.

    .venv/bin/python tools/make_runtime_fixtures.py [--out runtime/tests/fixtures] [--cases NAME...]

For every case of tests/runtime_cases.py but the 4.5 MB unconverted LeNet (and two exact cases:
a single binary convolution whose output is an integer, and converted k-bit layers on the
integer kernels, which the runtime runs bit for bit as MXNet does) it writes
``CASE/model-symbol.json``, ``CASE/model-0001.params``, ``CASE/input.npy`` and
``CASE/output.npy`` (MXNet's forward of the same files, inference mode). ``--cases`` rewrites
only the named cases and keeps the other entries of ``index.json`` (so a fixture made with
``--trained`` survives).
The runtime's tests (runtime/tests, with no MXNet; the aarch64 check under qemu) compare
against them. Needs MXNet and binmx (the main venv).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import mxnet as mx
import runtime_cases as rc
from binmx.converter import convert


def binary_layer_case():
    """One converted 1-bit QConvolution (no alpha, no bias): its outputs are exact integers."""
    data = mx.sym.var("data")
    sym = mx.sym.QConvolution(
        data, kernel=(3, 3), pad=(1, 1), num_filter=67, no_bias=True, name="bconv"
    )
    shape = (2, 130, 9, 7)
    args, aux = rc.random_params(sym, shape, seed=3)
    sym, args, aux = convert(sym, args, aux)
    return sym, args, aux, shape


def kbit_layers_case():
    """Converted k-bit layers on the integer kernels only (packed levels, no float layer): the
    runtime runs the operators' kernels, so its outputs are MXNet's bits."""
    x = mx.sym.QConvolution(
        mx.sym.var("data"),
        kernel=(3, 3),
        pad=(1, 1),
        stride=(2, 1),
        num_filter=12,
        num_group=3,
        act_bit=3,
        weight_bit=3,
        pad_value=-1,
        scaling_factor=True,
        name="k33",
    )
    x = mx.sym.QConvolution(
        x, kernel=(3, 3), pad=(1, 1), num_filter=70, act_bit=2, weight_bit=1, name="k21"
    )
    x = mx.sym.QConvolution(
        x, kernel=(1, 1), num_filter=9, act_bit=4, weight_bit=2, pad_value=1, name="k42"
    )
    x = mx.sym.QFullyConnected(
        mx.sym.Flatten(x), num_hidden=13, act_bit=8, weight_bit=8, scaling_factor=True, name="d88"
    )
    sym = mx.sym.QFullyConnected(x, num_hidden=6, act_bit=2, weight_bit=2, name="d22")
    shape = (2, 9, 10, 7)
    args, aux = rc.random_params(sym, shape, seed=5)
    sym, args, aux = convert(sym, args, aux)
    return sym, args, aux, shape


def trained_case(params_path: str):
    """A trained, converted checkpoint (the demo's LeNet) as it is, for 100 MNIST test images."""
    from binmx.converter import load_checkpoint

    sym, args, aux = load_checkpoint(params_path)
    return sym, args, aux, (100, 1, 28, 28)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join("runtime", "tests", "fixtures"))
    parser.add_argument(
        "--trained",
        metavar="PARAMS",
        help="also store this converted checkpoint (e.g. the demo's "
        "runs/mnist/binarized_lenet-0005.params) as lenet_trained, with the first 100 MNIST test "
        "images as its input",
    )
    parser.add_argument(
        "--cases",
        nargs="+",
        metavar="NAME",
        help="only these cases (the other fixtures and their index entries are kept)",
    )
    ns = parser.parse_args(argv)
    os.makedirs(ns.out, exist_ok=True)
    index = {}
    index_path = os.path.join(ns.out, "index.json")
    if ns.cases and os.path.exists(index_path):
        with open(index_path) as f:
            index = json.load(f)
    with tempfile.TemporaryDirectory() as tmp:
        # lenet_float_weights (4.5 MB of float weights) stays out; the unconverted float path
        # is in qops_none and bmxnet_ops.
        cases = {
            name: (lambda n=name: rc.build(n, tmp))
            for name in rc.CASES
            if name != "lenet_float_weights"
        }
        cases["binary_layer_exact"] = binary_layer_case
        cases["kbit_layers_exact"] = kbit_layers_case
        if ns.trained:
            cases["lenet_trained"] = lambda: trained_case(ns.trained)
        if ns.cases:
            unknown = sorted(set(ns.cases) - set(cases))
            if unknown:
                parser.error(f"unknown case(s) {unknown}; known: {sorted(cases)}")
            cases = {name: cases[name] for name in ns.cases}
        for name, make in cases.items():
            sym, args, aux, shape = make()
            d = os.path.join(ns.out, name)
            os.makedirs(d, exist_ok=True)
            rc.save(os.path.join(d, "model"), sym, args, aux)
            if name == "lenet_trained":
                from binmx.data import load_mnist

                x = load_mnist("test")[0][: shape[0]]
            else:
                x = np.random.default_rng(len(name)).standard_normal(shape).astype(np.float32)
            y = rc.mxnet_output(sym, args, aux, x)
            np.save(os.path.join(d, "input.npy"), x)
            np.save(os.path.join(d, "output.npy"), y)
            index[name] = {
                "input_shape": list(shape),
                "output_shape": list(y.shape),
                "exact": name.endswith("_exact"),
                "ops": rc.ops_of(sym),
            }
            print(f"{name}: input {shape} output {y.shape}")
    with open(index_path, "w") as f:
        json.dump(index, f, indent=1, sort_keys=True)
        f.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
