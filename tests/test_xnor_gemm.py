"""binmx.xnor against the NumPy reference: packing and the xnor GEMM on every available ISA.

Integers are compared with ==. The float epilogue is compared with == too: the kernels compute
``float32(dot) * scale`` rounded, then ``+ bias`` rounded (no fused multiply-add), which is
exactly what NumPy's float32 arithmetic does below.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from binmx import reference, xnor

ISAS = xnor.available_isas()
GRID_K = [*range(1, 11), 63, 64, 65, 127, 128, 129, 511, 512, 513, 576, 4608]


def _signs(rng: np.random.Generator, rows: int, k: int) -> np.ndarray:
    """Random float32 rows with exact +-0.0 sprinkled in (both must pack as +1)."""
    x = rng.standard_normal((rows, k)).astype(np.float32)
    zeros = rng.random((rows, k)) < 0.05
    x[zeros] = np.where(rng.random(int(zeros.sum())) < 0.5, np.float32(0.0), np.float32(-0.0))
    return x


def _assert_equal(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    bad = np.argwhere(got != want)
    assert bad.size == 0, (
        f"{what}: {len(bad)} mismatches, first at {tuple(bad[0])}: "
        f"got {got[tuple(bad[0])]!r}, want {want[tuple(bad[0])]!r}"
    )


def test_all_three_paths_available_here() -> None:
    flags = ""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    if "avx512_vpopcntdq" not in flags:
        pytest.skip("this CPU has no AVX-512 VPOPCNTDQ")
    assert ISAS == ["scalar", "avx2", "avx512"]
    assert xnor.current_isa() in ISAS


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("k", [1, 7, 8, 15, 16, 17, 31, 33, 63, 64, 65, 100, 128, 129, 576, 1000])
def test_pack_bits_matches_reference(isa: str, k: int, rng: np.random.Generator) -> None:
    x = _signs(rng, 9, k)
    x[0, 0] = -0.0
    x[-1, -1] = 0.0
    got = xnor.pack_bits(x, isa=isa)
    assert got.dtype == np.int64
    _assert_equal(got, reference.pack_bits(x), f"pack isa={isa} k={k}")
    # Tail bits beyond k are zero.
    tail = k % 64
    if tail:
        assert np.all((got[:, -1].view(np.uint64) >> np.uint64(tail)) == 0)


@pytest.mark.parametrize("isa", ISAS)
def test_pack_bits_special_values(isa: str) -> None:
    vals = np.array(
        [0.0, -0.0, 1e-45, -1e-45, np.inf, -np.inf, np.nan, -np.nan, 1.0, -1.0, 3e38, -3e38],
        dtype=np.float32,
    )
    x = np.tile(vals, 11)[None, :].astype(np.float32)  # 132 values: 2 full words + a tail
    got = xnor.pack_bits(x, isa=isa)
    # x < 0 is the rule: zeros of both signs and NaN give bit 0.
    _assert_equal(got, reference.pack_bits(x), f"special values isa={isa}")
    want_bits = np.tile([0, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 1], 11)
    bits = reference.unpack_bits(got, x.shape[1]) < 0
    assert np.array_equal(bits[0].astype(int), want_bits)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("k", GRID_K)
def test_gemm_grid_matches_reference(isa: str, k: int, rng: np.random.Generator) -> None:
    """Every M, N in 1..10 for this K: each (M, N) call must equal the top-left block."""
    a = xnor.pack_bits(_signs(rng, 10, k))
    b = xnor.pack_bits(_signs(rng, 10, k))
    full = reference.xnor_gemm(a, b, k)
    for m in range(1, 11):
        for n in range(1, 11):
            got = xnor.xnor_gemm(a[:m], b[:n], k, isa=isa, threads=1)
            assert got.dtype == np.int32
            _assert_equal(got, full[:m, :n], f"isa={isa} m={m} n={n} k={k}")


@pytest.mark.parametrize("isa", ISAS)
def test_gemm_random_sizes(isa: str, rng: np.random.Generator) -> None:
    for _ in range(12):
        m, n = (int(v) for v in rng.integers(1, 80, size=2))
        k = int(rng.integers(1, 2000))
        a = xnor.pack_bits(_signs(rng, m, k))
        b = xnor.pack_bits(_signs(rng, n, k))
        want = reference.xnor_gemm(a, b, k)
        got = xnor.xnor_gemm(a, b, k, isa=isa, threads=2)
        _assert_equal(got, want, f"isa={isa} m={m} n={n} k={k}")


@pytest.mark.parametrize("isa", ISAS)
def test_gemm_single_column(isa: str, rng: np.random.Generator) -> None:
    """N = 1 (a dense layer at batch 1) takes the kernels' panel-free GEMV: rows in blocks of
    four and one, depths across the 8-word vectors and their tails, int32 and float output."""
    for k in (1, 63, 64, 65, 511, 512, 513, 575, 1024, 1089):
        for m in (1, 3, 4, 5, 63, 64, 65, 131):
            a = xnor.pack_bits(_signs(rng, m, k))
            b = xnor.pack_bits(_signs(rng, 1, k))
            want = reference.xnor_gemm(a, b, k)
            for threads in (1, 2):
                got = xnor.xnor_gemm(a, b, k, isa=isa, threads=threads)
                _assert_equal(got, want, f"gemv isa={isa} m={m} k={k} threads={threads}")
            scale = rng.uniform(-2, 2, m).astype(np.float32)
            bias = rng.uniform(-5, 5, m).astype(np.float32)
            f32 = xnor.xnor_gemm_f32(a, b, k, scale=scale, bias=bias, isa=isa, threads=2)
            ref = (want.astype(np.float32) * scale[:, None]) + bias[:, None]
            _assert_equal(f32, ref.astype(np.float32), f"gemv f32 isa={isa} m={m} k={k}")


@pytest.mark.parametrize("isa", ISAS)
def test_gemm_k_smaller_than_words(isa: str, rng: np.random.Generator) -> None:
    """k may be less than 64 * words as long as the unused bits are zero."""
    x, y = _signs(rng, 5, 70), _signs(rng, 6, 70)
    a = np.concatenate([xnor.pack_bits(x), np.zeros((5, 2), np.int64)], axis=1)
    b = np.concatenate([xnor.pack_bits(y), np.zeros((6, 2), np.int64)], axis=1)
    want = (reference.sgn(x) @ reference.sgn(y).T).astype(np.int32)
    _assert_equal(xnor.xnor_gemm(a, b, 70, isa=isa), want, f"padded words isa={isa}")


@pytest.mark.parametrize("isa", ISAS)
def test_gemm_empty_and_zero_depth(isa: str) -> None:
    a = np.zeros((0, 3), np.int64)
    b = np.zeros((4, 3), np.int64)
    assert xnor.xnor_gemm(a, b, 100, isa=isa).shape == (0, 4)
    assert xnor.xnor_gemm(b, a, 100, isa=isa).shape == (4, 0)
    z = np.zeros((3, 0), np.int64)
    _assert_equal(xnor.xnor_gemm(z, z[:2], 0, isa=isa), np.zeros((3, 2), np.int32), "k=0")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("with_scale", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_gemm_f32_epilogue(
    isa: str, with_scale: bool, with_bias: bool, rng: np.random.Generator
) -> None:
    m, n, k = 13, 37, 577
    a = xnor.pack_bits(_signs(rng, m, k))
    b = xnor.pack_bits(_signs(rng, n, k))
    dot = reference.xnor_gemm(a, b, k).astype(np.float32)
    scale = rng.uniform(-2, 2, m).astype(np.float32) if with_scale else None
    bias = rng.uniform(-5, 5, m).astype(np.float32) if with_bias else None
    want = dot
    if scale is not None:
        want = want * scale[:, None]
    if bias is not None:
        want = want + bias[:, None]
    got = xnor.xnor_gemm_f32(a, b, k, scale=scale, bias=bias, isa=isa, threads=3)
    assert got.dtype == np.float32
    _assert_equal(got, want.astype(np.float32), f"f32 isa={isa}")


@pytest.mark.parametrize("isa", ISAS)
def test_results_identical_for_any_thread_count(isa: str, rng: np.random.Generator) -> None:
    m, n, k = 67, 301, 1100
    a = xnor.pack_bits(_signs(rng, m, k))
    b = xnor.pack_bits(_signs(rng, n, k))
    scale = rng.uniform(0.1, 2, m).astype(np.float32)
    bias = rng.uniform(-1, 1, m).astype(np.float32)
    base = xnor.xnor_gemm(a, b, k, isa=isa, threads=1)
    base_f = xnor.xnor_gemm_f32(a, b, k, scale=scale, bias=bias, isa=isa, threads=1)
    _assert_equal(base, reference.xnor_gemm(a, b, k), f"isa={isa} threads=1")
    for threads in (2, 3, 7):
        _assert_equal(xnor.xnor_gemm(a, b, k, isa=isa, threads=threads), base, f"t={threads}")
        got_f = xnor.xnor_gemm_f32(a, b, k, scale=scale, bias=bias, isa=isa, threads=threads)
        _assert_equal(got_f, base_f, f"f32 threads={threads}")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_threads_in_a_forked_child(rng: np.random.Generator) -> None:
    """After the parent ran a multi-threaded call (an OpenMP team exists), a fork()ed child's
    multi-threaded calls must neither hang (GNU libgomp cannot start a team there) nor differ."""
    m, n, k = 40, 900, 700
    a = xnor.pack_bits(_signs(rng, m, k))
    b = xnor.pack_bits(_signs(rng, n, k))
    want = xnor.xnor_gemm(a, b, k, threads=2)
    _assert_equal(want, reference.xnor_gemm(a, b, k), "parent, 2 threads")
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report through the pipe, never return into pytest
        code = 1
        try:
            got = xnor.xnor_gemm(a, b, k, threads=2)
            got3 = xnor.xnor_gemm(a, b, k, threads=3)
            ok = np.array_equal(got, want) and np.array_equal(got3, want)
            os.write(write_fd, b"same" if ok else b"differs")
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    deadline = 60.0
    waited = 0.0
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if waited >= deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung in a multi-threaded xnor_gemm call")
        threading.Event().wait(0.05)
        waited += 0.05
    message = os.read(read_fd, 64)
    os.close(read_fd)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    assert message == b"same", message


def test_isas_agree_bitwise_on_float_output(rng: np.random.Generator) -> None:
    m, n, k = 20, 50, 300
    a = xnor.pack_bits(_signs(rng, m, k))
    b = xnor.pack_bits(_signs(rng, n, k))
    scale = rng.uniform(-3, 3, m).astype(np.float32)
    bias = rng.uniform(-3, 3, m).astype(np.float32)
    outs = [xnor.xnor_gemm_f32(a, b, k, scale=scale, bias=bias, isa=isa) for isa in ISAS]
    for isa, out in zip(ISAS, outs, strict=True):
        assert out.tobytes() == outs[0].tobytes(), f"{isa} differs from {ISAS[0]}"


def test_out_argument(rng: np.random.Generator) -> None:
    a = xnor.pack_bits(_signs(rng, 4, 100))
    b = xnor.pack_bits(_signs(rng, 5, 100))
    out = np.full((4, 5), 99, np.int32)
    assert xnor.xnor_gemm(a, b, 100, out=out) is out
    _assert_equal(out, reference.xnor_gemm(a, b, 100), "out=")
    outf = np.zeros((4, 5), np.float32)
    assert xnor.xnor_gemm_f32(a, b, 100, out=outf) is outf
    _assert_equal(outf, reference.xnor_gemm(a, b, 100).astype(np.float32), "out= f32")


def test_concurrent_callers_get_correct_results(rng: np.random.Generator) -> None:
    """Several Python threads (GIL released in the call) share the thread pool."""
    m, n, k = 40, 120, 700
    a = xnor.pack_bits(_signs(rng, m, k))
    b = xnor.pack_bits(_signs(rng, n, k))
    want = reference.xnor_gemm(a, b, k)
    errors: list[str] = []

    def work(threads: int) -> None:
        for _ in range(30):
            got = xnor.xnor_gemm(a, b, k, threads=threads)
            if not np.array_equal(got, want):
                errors.append(f"threads={threads}")

    workers = [threading.Thread(target=work, args=(t,)) for t in (1, 2, 2, 3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert not any(w.is_alive() for w in workers), "deadlock: a caller did not finish"
    assert not errors


# ---- BINMX_ISA cap (a fresh process per setting: the cap is read from the environment) ----

# The probe loads the compiled module straight from the installed package, without running
# binmx/__init__.py (which imports MXNet and takes seconds); one test goes through binmx.xnor.
_PROBE_RAW = (
    "import importlib.machinery, importlib.util, os, numpy as np\n"
    "pkg = importlib.util.find_spec('binmx').submodule_search_locations[0]\n"
    "path = [os.path.join(pkg, f) for f in os.listdir(pkg) if f.startswith('_xnor.')][0]\n"
    "spec = importlib.util.spec_from_file_location('binmx._xnor', path)\n"
    "xnor = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(xnor)\n"
)
_PROBE_API = "import numpy as np\nfrom binmx import xnor\n"
_PROBE_BODY = (
    "try:\n"
    "    isa = xnor.current_isa()\n"
    "    a = xnor.pack_bits(np.ones((2, 70), np.float32))\n"
    "    print(isa, int(xnor.xnor_gemm(a, a, 70)[0, 0]))\n"
    "except ValueError as e:\n"
    "    print('ValueError', e)\n"
)


def _probe(value: str | None, *, full_api: bool = False) -> str:
    env = dict(os.environ)
    env.pop("BINMX_ISA", None)
    if value is not None:
        env["BINMX_ISA"] = value
    code = (_PROBE_API if full_api else _PROBE_RAW) + _PROBE_BODY
    res = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_binmx_isa_unset_picks_best() -> None:
    assert _probe(None) == f"{ISAS[-1]} 70"


@pytest.mark.parametrize("isa", ISAS)
def test_binmx_isa_caps_the_default(isa: str) -> None:
    assert _probe(isa) == f"{isa} 70"


@pytest.mark.parametrize("full_api", [False, True])
def test_binmx_isa_invalid_value_is_an_error(full_api: bool) -> None:
    out = _probe("avx1024", full_api=full_api)
    assert out.startswith("ValueError") and "BINMX_ISA" in out, out


def test_binmx_isa_unavailable_is_an_error() -> None:
    missing = [i for i in ("scalar", "avx2", "avx512", "neon") if i not in ISAS]
    if not missing:
        pytest.skip("every path is available on this machine")
    out = _probe(missing[0])
    assert out.startswith("ValueError") and missing[0] in out, out


def test_unavailable_isa_argument_is_an_error() -> None:
    missing = [i for i in ("scalar", "avx2", "avx512", "neon") if i not in ISAS]
    if not missing:
        pytest.skip("every path is available on this machine")
    a = np.zeros((1, 1), np.int64)
    with pytest.raises(ValueError, match="isa"):
        xnor.xnor_gemm(a, a, 1, isa=missing[0])


# ---- bad input -----------------------------------------------------------------------------

_A = np.zeros((3, 2), np.int64)
_B = np.zeros((4, 2), np.int64)


@pytest.mark.parametrize(
    ("call", "exc", "name"),
    [
        (lambda: xnor.xnor_gemm(_A.astype(np.float64), _B, 10), TypeError, "a_words"),
        (lambda: xnor.xnor_gemm(_A, _B.astype(np.int32), 10), TypeError, "b_words"),
        (lambda: xnor.xnor_gemm(_A.astype(np.uint64), _B, 10), TypeError, "a_words"),
        (lambda: xnor.xnor_gemm(_A.tolist(), _B, 10), TypeError, "a_words"),
        (lambda: xnor.xnor_gemm(_A[0], _B, 10), ValueError, "a_words"),
        (lambda: xnor.xnor_gemm(_A, _B[None], 10), ValueError, "b_words"),
        (lambda: xnor.xnor_gemm(_A, _B[:, :1], 10), ValueError, "b_words"),
        (lambda: xnor.xnor_gemm(_A, _B, 129), ValueError, "k"),
        (lambda: xnor.xnor_gemm(_A, _B, -1), ValueError, "k"),
        (lambda: xnor.xnor_gemm(_A, _B, 10.0), TypeError, "k"),
        (lambda: xnor.xnor_gemm(_A, _B, True), TypeError, "k"),
        (lambda: xnor.xnor_gemm(np.zeros((3, 4), np.int64)[:, ::2], _B, 10), ValueError, "a_words"),
        (
            lambda: xnor.xnor_gemm(_A, np.asfortranarray(np.zeros((4, 2), np.int64)), 10),
            ValueError,
            "b_words",
        ),
        (lambda: xnor.xnor_gemm(_A, _B, 10, isa="avx3"), ValueError, "isa"),
        (lambda: xnor.xnor_gemm(_A, _B, 10, isa=2), TypeError, "isa"),
        (lambda: xnor.xnor_gemm(_A, _B, 10, threads=0), ValueError, "threads"),
        (lambda: xnor.xnor_gemm(_A, _B, 10, threads=-2), ValueError, "threads"),
        (lambda: xnor.xnor_gemm(_A, _B, 10, threads=1.5), TypeError, "threads"),
        (lambda: xnor.xnor_gemm(_A, _B, 10, threads=True), TypeError, "threads"),
        (lambda: xnor.xnor_gemm(_A, _B, 10, out=np.zeros((3, 5), np.int32)), ValueError, "out"),
        (lambda: xnor.xnor_gemm(_A, _B, 10, out=np.zeros((3, 4), np.int64)), TypeError, "out"),
        (lambda: xnor.xnor_gemm(_A, _B, 10, out=_A.view(np.int32)[:, :4]), ValueError, "out"),
        (lambda: xnor.xnor_gemm_f32(_A, _B, 10, scale=np.ones(4, np.float32)), ValueError, "scale"),
        (lambda: xnor.xnor_gemm_f32(_A, _B, 10, bias=np.ones(3, np.float64)), TypeError, "bias"),
        (
            lambda: xnor.xnor_gemm_f32(_A, _B, 10, bias=np.ones((3, 1), np.float32)),
            ValueError,
            "bias",
        ),
        (lambda: xnor.xnor_gemm_f32(_A, _B, 65 * 2), ValueError, "k"),
        (lambda: xnor.pack_bits(np.ones((2, 3), np.float64)), TypeError, "x"),
        (lambda: xnor.pack_bits(np.ones(3, np.float32)), ValueError, "x"),
        (lambda: xnor.pack_bits(np.ones((3, 4), np.float32)[:, ::2]), ValueError, "x"),
        (lambda: xnor.pack_bits(np.ones((3, 4), np.float32), isa="sse"), ValueError, "isa"),
    ],
)
def test_bad_input_raises_naming_the_argument(call, exc: type, name: str) -> None:
    with pytest.raises(exc, match=f"`{name}`"):
        call()


def test_bad_input_through_the_raw_binding_does_not_crash() -> None:
    """The pybind11 layer refuses bad arguments on its own too (no segfault)."""
    from binmx import _xnor

    with pytest.raises(ValueError, match="k="):
        _xnor.xnor_gemm(_A, _B, 1000)
    with pytest.raises(ValueError, match="k="):
        _xnor.xnor_gemm(_A, _B, -5)
    with pytest.raises(ValueError, match="word counts"):
        _xnor.xnor_gemm(_A, np.zeros((4, 1), np.int64), 10)
    with pytest.raises(ValueError, match="threads"):
        _xnor.xnor_gemm(_A, _B, 10, "", -1)
    with pytest.raises(ValueError, match="isa"):
        _xnor.xnor_gemm(_A, _B, 10, "bogus", 1)
    with pytest.raises(TypeError):
        _xnor.xnor_gemm(_A.astype(np.float32), _B, 10)
