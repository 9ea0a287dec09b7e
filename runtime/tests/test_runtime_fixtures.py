"""binmx_runtime against stored MXNet outputs, on every ISA path and at 1 and 2 threads.

The fixtures (runtime/tests/fixtures, tools/make_runtime_fixtures.py) hold converted models
(folded and not, LeNet, ResNets with both stems, a Gluon export, the BMXNet-era float
operators, k-bit and 1-bit binmx layers with every attribute), an input and MXNet + binmx's
output. Binary layers are integer-exact (the `exact` case: ==); whole networks agree within
1e-4 x max |output| (their float layers sum in another order than oneDNN) with the same argmax.
"""

from __future__ import annotations

import binmx_runtime
import numpy as np
import pytest
from rt_helpers import FIXTURES, available_isas, fixture_index

INDEX = fixture_index()
ISAS = available_isas()


def test_fixtures_exist() -> None:
    assert len(INDEX) >= 10
    assert ISAS, "no ISA path could load a model"


@pytest.mark.parametrize("isa", ["scalar", "avx2", "avx512", "neon"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name", sorted(INDEX))
def test_matches_mxnet(name: str, threads: int, isa: str, monkeypatch) -> None:
    if isa not in ISAS:
        pytest.skip(f"ISA {isa} not available on this machine")
    monkeypatch.setenv("BINMX_ISA", isa)
    case = INDEX[name]
    x = np.load(FIXTURES / name / "input.npy")
    ref = np.load(FIXTURES / name / "output.npy")
    model = binmx_runtime.load(FIXTURES / name / "model", 1, input_shape=x.shape, threads=threads)
    assert model.isa == isa
    assert model.threads == threads
    assert model.output_shape == tuple(case["output_shape"])
    y = model.run(x)
    assert y.shape == ref.shape and y.dtype == np.float32
    if case["exact"]:
        bad = np.argwhere(y != ref)
        assert bad.size == 0, (
            f"{len(bad)} outputs differ, first at {bad[0]}: {y[tuple(bad[0])]} "
            f"vs {ref[tuple(bad[0])]}"
        )
    else:
        diff = np.abs(y - ref).max()
        # Float layers (stem, classifier, k-bit) sum in a different order than MXNet/oneDNN.
        assert diff <= 1e-4 * np.abs(ref).max(), f"max |diff| {diff}"
        rows = len(ref)
        assert (y.reshape(rows, -1).argmax(1) == ref.reshape(rows, -1).argmax(1)).all()
    # The input is not modified, and a second run gives the same bits.
    np.testing.assert_array_equal(x, np.load(FIXTURES / name / "input.npy"))
    np.testing.assert_array_equal(model.run(x), y)


def test_profile_and_summary(capsys) -> None:
    x = np.load(FIXTURES / "resnet_cifar_fold" / "input.npy")
    model = binmx_runtime.load(
        FIXTURES / "resnet_cifar_fold" / "model", 1, input_shape=x.shape, threads=1
    )
    rows = model.profile(x, repeat=3)
    assert rows and {"name", "op", "output_shape", "binary_macs", "float_macs", "ms"} <= set(
        rows[0]
    )
    ops = [r["op"] for r in rows]
    assert "QConvolution" in ops and "Convolution" in ops
    binary = sum(r["binary_macs"] for r in rows)
    # 17 binary 3x3 / 1x1 convolutions of a width-16 ResNet-18 on 32x32, batch 2: exact count.
    assert binary == sum(r["binary_macs"] for r in model.layers()) and binary > 0
    assert all(r["ms"] >= 0.0 for r in rows)
    assert rows[-1]["output_shape"] == (2, 10)
    text = model.summary(x, repeat=2)
    assert "QConvolution" in capsys.readouterr().out and "total" in text


def test_concurrent_runs_give_the_same_outputs() -> None:
    import threading

    name = "resnet_imagenet_convert"
    x = np.load(FIXTURES / name / "input.npy")
    model = binmx_runtime.load(FIXTURES / name / "model", 1, input_shape=x.shape, threads=2)
    expected = model.run(x)
    inputs = [x * s for s in (1.0, 0.5, -1.0, 2.0)]
    wants = [model.run(v) for v in inputs]
    errors: list[str] = []

    def worker(k: int) -> None:
        for _ in range(5):
            got = model.run(inputs[k])
            if not np.array_equal(got, wants[k]):
                errors.append(f"thread {k}: output differs")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    np.testing.assert_array_equal(model.run(x), expected)
