"""binmx.cuda: GPU bit packing, xnor GEMM, binary conv and FC against NumPy references.

The GPU tests (marked ``gpu``) skip with the reason when the library or a device is missing.
Everything here imports only NumPy (and CuPy when present): ``binmx/cuda.py`` and
``binmx/reference.py`` are loaded from the source tree by path, so this file also runs on a GPU
machine without MXNet (tools/gpu_check.sh). The references: ``reference.pack_bits`` /
``reference.xnor_gemm`` (the same references the CPU kernels are tested against, so equality
here means GPU == CPU bit for bit) and ``conv_reference`` below, a direct NumPy
``Convolution(sgn x, sgn W)`` with the padding value written into the padded border.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CUDA_PY = str(ROOT / "python/binmx/cuda.py")


def _load(name: str, rel: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / rel)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _find_library() -> None:
    """Without BINMX_CUDA_LIB, use an installed binmx's library or CI's build, if present."""
    if os.environ.get("BINMX_CUDA_LIB"):
        return
    candidates = [ROOT / "python/binmx/libbinmx_cuda.so"]
    spec = importlib.util.find_spec("binmx")  # locates, does not import
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / "libbinmx_cuda.so" for p in spec.submodule_search_locations]
    candidates.append(ROOT / "build/cuda-ci/src/xnor_gemm/cuda/libbinmx_cuda.so")
    for path in candidates:
        if path.is_file():
            os.environ["BINMX_CUDA_LIB"] = str(path)
            return


_find_library()
cuda = _load("_binmx_cuda_under_test", "python/binmx/cuda.py")
ref = _load("_binmx_reference_under_test", "python/binmx/reference.py")

REASON = cuda.unavailable_reason()
gpu = pytest.mark.gpu
needs_gpu = pytest.mark.skipif(REASON is not None, reason=f"no GPU path: {REASON}")


def _algos() -> list[str]:
    if REASON is not None:
        return ["simt", "tensor"]  # skipped anyway
    return ["simt", "tensor"] if cuda.device_capability() >= 80 else ["simt"]


ALGOS = _algos()


def signed_data(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Random floats with exact +0.0, -0.0 and NaN sprinkled in (all give bit 0, i.e. +1)."""
    x = rng.standard_normal(shape).astype(np.float32)
    flat = x.reshape(-1)
    if flat.size:
        idx = rng.choice(flat.size, size=max(1, flat.size // 16), replace=True)
        flat[idx[0::3]] = 0.0
        flat[idx[1::3]] = -0.0
        flat[idx[2::3]] = np.nan
    return x


def assert_equal(name: str, got: np.ndarray, want: np.ndarray) -> None:
    """Exact equality; for floats bit identity (so +0.0 vs -0.0 would count as a mismatch)."""
    got = np.asarray(got)
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != {want.dtype}"
    if got.dtype.kind == "f":
        diff = got.view(np.int32) != want.view(np.int32)
    else:
        diff = got != want
    if diff.any():
        where = np.argwhere(diff)[:5]
        details = ", ".join(f"{tuple(i)}: {got[tuple(i)]} != {want[tuple(i)]}" for i in where)
        pytest.fail(f"{name}: {int(diff.sum())} mismatches, first: {details}")


# ---- runs everywhere ---------------------------------------------------------------------------


def test_standalone_import_does_not_need_mxnet() -> None:
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('c', {CUDA_PY!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "n = m.device_count()\n"
        "assert isinstance(n, int) and n >= 0, n\n"
        "assert 'mxnet' not in sys.modules\n"
        "print('ok', n)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("ok")


def test_missing_library_reports_cleanly(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "libbinmx_cuda.so"
    code = (
        "import importlib.util, numpy as np\n"
        f"spec = importlib.util.spec_from_file_location('c', {CUDA_PY!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "assert m.device_count() == 0 and not m.available()\n"
        "print(m.unavailable_reason())\n"
        "try:\n"
        "    m.pack_bits(np.zeros((2, 3), np.float32))\n"
        "except m.CudaUnavailableError as e:\n"
        "    print('raised', e)\n"
    )
    env = dict(os.environ, BINMX_CUDA_LIB=str(missing))
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert res.returncode == 0, res.stderr
    assert "not found" in res.stdout and "raised binmx.cuda cannot run" in res.stdout


def test_no_device_is_a_clean_error() -> None:
    if REASON is None:
        pytest.skip("a CUDA device is present; the no-device path is not reachable here")
    assert cuda.device_count() == 0
    assert isinstance(REASON, str) and REASON
    with pytest.raises(cuda.CudaUnavailableError, match="cannot run"):
        cuda.pack_bits(np.ones((2, 70), np.float32))
    with pytest.raises(cuda.CudaUnavailableError, match="cannot run"):
        cuda.xnor_gemm(np.zeros((2, 1), np.int64), np.zeros((3, 1), np.int64), 10)


def test_argument_errors_come_before_the_device() -> None:
    x = np.zeros((1, 64, 5, 5), np.float32)
    with pytest.raises(TypeError, match="`x` to have dtype float32"):
        cuda.pack_bits(np.zeros((2, 3), np.float64))
    with pytest.raises(ValueError, match="`x` to have rank 2"):
        cuda.pack_bits(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="same number of words"):
        cuda.xnor_gemm(np.zeros((2, 1), np.int64), np.zeros((2, 2), np.int64), 10)
    with pytest.raises(ValueError, match="`k` in"):
        cuda.xnor_gemm(np.zeros((2, 1), np.int64), np.zeros((2, 1), np.int64), 65)
    with pytest.raises(ValueError, match="`algo`"):
        cuda.xnor_gemm(np.zeros((2, 1), np.int64), np.zeros((2, 1), np.int64), 1, algo="fast")
    with pytest.raises(ValueError, match=r"ceil\(C/num_group/64\) = 1\), got \(8, 3, 3, 2\)"):
        cuda.binary_conv2d(x, np.zeros((8, 3, 3, 2), np.int64), pad=1)
    with pytest.raises(ValueError, match="divisible by `num_group`"):
        cuda.binary_conv2d(x, np.zeros((8, 3, 3, 1), np.int64), num_group=3)
    with pytest.raises(ValueError, match="`pad_value`"):
        cuda.binary_conv2d(x, np.zeros((8, 3, 3, 1), np.int64), pad_value=2)
    with pytest.raises(ValueError, match="`stride` >= 1"):
        cuda.binary_conv2d(x, np.zeros((8, 3, 3, 1), np.int64), stride=0)
    with pytest.raises(ValueError, match=r"`alpha` to have shape \(8,\)"):
        cuda.binary_conv2d(x, np.zeros((8, 3, 3, 1), np.int64), alpha=np.ones(7, np.float32))
    with pytest.raises(ValueError, match="words per row"):
        cuda.fully_connected(np.zeros((2, 65), np.float32), np.zeros((4, 1), np.int64))


@pytest.mark.slow
def test_library_compiles_with_nvcc_and_exports_the_api(tmp_path: Path) -> None:
    """A one-architecture nvcc build of src/xnor_gemm/cuda (the full two-arch build is CI's)."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not on PATH; CI's BINMX_WITH_CUDA build is the compile check")
    src = ROOT / "src/xnor_gemm/cuda"
    lib = tmp_path / "libbinmx_cuda.so"
    cmd = [
        nvcc, "-std=c++17", "-O1", "-shared", "-Xcompiler=-fPIC,-fvisibility=hidden",
        "-gencode=arch=compute_80,code=sm_80", "-o", str(lib),
        *(str(src / f) for f in ("api.cu", "gemm_simt.cu", "gemm_tensor.cu", "train.cu")),
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    code = (
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('c', {CUDA_PY!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "lib = m._load()\n"
        "assert lib is not None, m._lib_error\n"  # every declared symbol resolved
        "print(m.device_count(), m.unavailable_reason())\n"
        "print(m.conv2d_out_shape((2, 64, 56, 56), (64, 3, 3, 1), pad=1, stride=2))\n"
    )
    env = dict(os.environ, BINMX_CUDA_LIB=str(lib))
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert res.returncode == 0, res.stderr
    assert "(2, 64, 28, 28)" in res.stdout


# ---- references --------------------------------------------------------------------------------


def conv_reference(
    x: np.ndarray,
    w: np.ndarray,
    *,
    stride: tuple[int, int],
    pad: tuple[int, int],
    dilate: tuple[int, int],
    groups: int,
    pad_value: int,
    alpha: np.ndarray | None,
    bias: np.ndarray | None,
) -> np.ndarray:
    """``Convolution(sgn x, sgn w) * alpha + bias`` with ``pad_value`` in the padded border."""
    # float64 sums of +-1 terms are exact integers (far below 2^53) and use BLAS.
    xs = ref.sgn(x).astype(np.float64)
    ws = ref.sgn(w).astype(np.float64)
    n, c, h, wd = x.shape
    f, cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dilate
    xp = np.full((n, c, h + 2 * ph, wd + 2 * pw), pad_value, np.float64)
    xp[:, :, ph : ph + h, pw : pw + wd] = xs
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    fg = f // groups
    dot = np.zeros((n, f, oh, ow), np.float64)
    for g in range(groups):
        xg = xp[:, g * cg : (g + 1) * cg]
        wg = ws[g * fg : (g + 1) * fg]
        for i in range(kh):
            for j in range(kw):
                rows = slice(i * dh, i * dh + sh * (oh - 1) + 1, sh)
                cols = slice(j * dw, j * dw + sw * (ow - 1) + 1, sw)
                patch = xg[:, :, rows, cols]
                dot[:, g * fg : (g + 1) * fg] += np.einsum(
                    "ncyx,fc->nfyx", patch, wg[:, :, i, j], optimize=True
                )
    out = dot.astype(np.int64).astype(np.float32)
    if alpha is not None:
        out = out * alpha[None, :, None, None]  # float32 * float32, rounded once
    # "+ bias" always, with 0 for no bias, as the CPU operator does (-0.0 becomes +0.0).
    out = out + (bias[None, :, None, None] if bias is not None else np.float32(0))
    return out.astype(np.float32)


def pack_weight_reference(w: np.ndarray) -> np.ndarray:
    f, cg, kh, kw = w.shape
    rows = np.ascontiguousarray(w.transpose(0, 2, 3, 1)).reshape(f * kh * kw, cg)
    return ref.pack_bits(rows).reshape(f, kh, kw, -1)


def test_conv_reference_matches_mxnet_convolution(rng: np.random.Generator) -> None:
    """The NumPy conv reference the GPU is checked against equals MXNet's Convolution on sign()ed
    data (integer sums of +-1 are exact in float32); +-1 padding = explicit padding, pad 0."""
    mx = pytest.importorskip("mxnet")
    for case in _conv_cases(12):
        batch, c, h, w, f, kh, kw, stride, pad, dilate, groups, pad_value, _ = case
        x = signed_data(rng, (batch, c, h, w))
        wt = signed_data(rng, (f, c // groups, kh, kw))
        xs = ref.sgn(x)
        if pad_value != 0:
            xs = np.pad(xs, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=pad_value)
        mx_pad = 0 if pad_value != 0 else pad
        got = mx.nd.Convolution(
            mx.nd.array(xs), mx.nd.array(ref.sgn(wt)), kernel=(kh, kw), stride=(stride, stride),
            dilate=(dilate, dilate), pad=(mx_pad, mx_pad), num_filter=f, num_group=groups,
            no_bias=True,
        ).asnumpy()  # fmt: skip
        want = conv_reference(
            x, wt, stride=(stride, stride), pad=(pad, pad), dilate=(dilate, dilate),
            groups=groups, pad_value=pad_value, alpha=None, bias=None,
        )  # fmt: skip
        assert_equal(f"reference vs mx {case}", got.astype(np.float32), want)


# ---- GPU vs reference --------------------------------------------------------------------------

PACK_SHAPES = [(1, 1), (3, 63), (2, 64), (5, 65), (4, 127), (4, 128), (3, 129), (2, 511), (7, 513)]


@gpu
@needs_gpu
@pytest.mark.parametrize(("rows", "k"), PACK_SHAPES)
def test_pack_bits_matches_reference(rng: np.random.Generator, rows: int, k: int) -> None:
    x = signed_data(rng, (rows, k))
    assert_equal("pack_bits", cuda.pack_bits(x), ref.pack_bits(x))


GEMM_SHAPES = [
    (1, 1, 1), (1, 1, 64), (3, 5, 63), (15, 17, 65), (31, 33, 127), (32, 64, 128),
    (33, 65, 129), (63, 127, 255), (64, 128, 256), (65, 129, 257), (7, 300, 511),
    (129, 31, 512), (70, 200, 513), (64, 3136, 576), (512, 49, 4608),
]  # fmt: skip


@gpu
@needs_gpu
@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize(("m", "n", "k"), GEMM_SHAPES)
def test_xnor_gemm_matches_reference(
    rng: np.random.Generator, algo: str, m: int, n: int, k: int
) -> None:
    a = ref.pack_bits(signed_data(rng, (m, k)))
    b = ref.pack_bits(signed_data(rng, (n, k)))
    got = cuda.xnor_gemm(a, b, k, algo=algo)
    assert_equal(f"xnor_gemm[{algo}]", got, ref.xnor_gemm(a, b, k))


@gpu
@needs_gpu
@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize(("m", "n", "k"), [(33, 65, 129), (64, 200, 576), (5, 7, 1)])
def test_xnor_gemm_f32_epilogue(
    rng: np.random.Generator, algo: str, m: int, n: int, k: int
) -> None:
    a = ref.pack_bits(signed_data(rng, (m, k)))
    b = ref.pack_bits(signed_data(rng, (n, k)))
    scale = rng.uniform(0.01, 2.0, m).astype(np.float32)
    bias = rng.standard_normal(m).astype(np.float32)
    dot = ref.xnor_gemm(a, b, k).astype(np.float32)
    want = dot * scale[:, None] + bias[:, None]  # float32 ops: multiply rounded, then add
    got = cuda.xnor_gemm_f32(a, b, k, scale=scale, bias=bias, algo=algo)
    assert_equal(f"xnor_gemm_f32[{algo}]", got, want)
    assert_equal("no scale/bias", cuda.xnor_gemm_f32(a, b, k, algo=algo), dot)
    # A negative scale times dot 0 is -0.0; the CPU's "+ 0" (no bias) makes it +0.0.
    neg = -scale
    want_neg = dot * neg[:, None] + np.float32(0)
    got_neg = cuda.xnor_gemm_f32(a, b, k, scale=neg, algo=algo)
    assert_equal("negative scale, no bias", got_neg, want_neg)


@gpu
@needs_gpu
@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize(("batch", "d", "hidden"), [(1, 1, 1), (3, 65, 10), (16, 513, 130)])
def test_fully_connected(
    rng: np.random.Generator, algo: str, batch: int, d: int, hidden: int
) -> None:
    x = signed_data(rng, (batch, d))
    w = signed_data(rng, (hidden, d))
    alpha = rng.uniform(0.1, 1.0, hidden).astype(np.float32)
    bias = rng.standard_normal(hidden).astype(np.float32)
    wp = ref.pack_bits(w)
    dot = (ref.sgn(x).astype(np.int64) @ ref.sgn(w).astype(np.int64).T).astype(np.float32)
    want = dot * alpha[None, :] + bias[None, :]
    got = cuda.fully_connected(x, wp, alpha=alpha, bias=bias, algo=algo)
    assert_equal(f"fully_connected[{algo}]", got, want)


@gpu
@needs_gpu
@pytest.mark.parametrize(("f", "cg", "kh", "kw"), [(1, 1, 1, 1), (8, 65, 3, 3), (4, 130, 2, 5)])
def test_pack_weight_matches_reference(
    rng: np.random.Generator, f: int, cg: int, kh: int, kw: int
) -> None:
    w = signed_data(rng, (f, cg, kh, kw))
    assert_equal("pack_weight", cuda.pack_weight(w), pack_weight_reference(w))


def _conv_cases(count: int) -> list[tuple[int, ...]]:
    """A fixed pseudo-random grid (its own generator so the parametrization is stable)."""
    g = np.random.default_rng(20240607)
    cases = []
    for _ in range(count):
        groups = int(g.choice([1, 1, 2, 4]))
        cg = int(g.choice([1, 3, 17, 63, 64, 65, 100, 130]))
        fg = int(g.choice([1, 5, 16, 33]))
        k = int(g.choice([1, 2, 3, 3, 5]))
        kh, kw = (k, k) if g.random() < 0.8 else (k, int(g.choice([1, 3])))
        stride = int(g.choice([1, 1, 2, 3]))
        dilate = int(g.choice([1, 1, 2]))
        pad = int(g.integers(0, 4))
        h = int(g.integers(max(1, dilate * (kh - 1) + 1 - 2 * pad), 14))
        w = int(g.integers(max(1, dilate * (kw - 1) + 1 - 2 * pad), 14))
        batch = int(g.integers(1, 4))
        pad_value = int(g.choice([0, 0, 1, -1]))
        scaled = int(g.random() < 0.5)
        cases.append(
            (batch, groups * cg, h, w, groups * fg, kh, kw, stride, pad, dilate, groups,
             pad_value, scaled)
        )  # fmt: skip
    return cases


def _run_conv(rng: np.random.Generator, case: tuple[int, ...], algo: str) -> None:
    batch, c, h, w, f, kh, kw, stride, pad, dilate, groups, pad_value, scaled = case
    x = signed_data(rng, (batch, c, h, w))
    wt = signed_data(rng, (f, c // groups, kh, kw))
    alpha = rng.uniform(0.01, 1.0, f).astype(np.float32) if scaled else None
    bias = rng.standard_normal(f).astype(np.float32) if scaled else None
    opts = dict(stride=(stride, stride), pad=(pad, pad), dilate=(dilate, dilate))
    want = conv_reference(x, wt, groups=groups, pad_value=pad_value, alpha=alpha, bias=bias, **opts)
    got = cuda.binary_conv2d(
        x, pack_weight_reference(wt), num_group=groups, pad_value=pad_value, alpha=alpha,
        bias=bias, algo=algo, **opts,
    )  # fmt: skip
    assert_equal(f"binary_conv2d[{algo}] {case}", got, want)


@gpu
@needs_gpu
@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("case", _conv_cases(40))
def test_binary_conv2d_grid(rng: np.random.Generator, algo: str, case: tuple[int, ...]) -> None:
    _run_conv(rng, case, algo)


@gpu
@needs_gpu
@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize(
    "case",
    [
        # ResNet-18 3x3 layers, pad 1, batch 1 (and one stride-2 transition), every pad_value.
        (1, 64, 56, 56, 64, 3, 3, 1, 1, 1, 1, 0, 1),
        (1, 128, 28, 28, 128, 3, 3, 1, 1, 1, 1, 1, 0),
        (1, 256, 14, 14, 256, 3, 3, 1, 1, 1, 1, -1, 1),
        (2, 512, 7, 7, 512, 3, 3, 1, 1, 1, 1, 0, 0),
        (1, 128, 28, 28, 256, 3, 3, 2, 1, 1, 1, 0, 1),
    ],
)
def test_binary_conv2d_resnet18_layers(
    rng: np.random.Generator, algo: str, case: tuple[int, ...]
) -> None:
    _run_conv(rng, case, algo)


@gpu
@needs_gpu
def test_algos_agree_and_default_is_exact(rng: np.random.Generator) -> None:
    a = ref.pack_bits(signed_data(rng, (96, 1000)))
    b = ref.pack_bits(signed_data(rng, (300, 1000)))
    want = ref.xnor_gemm(a, b, 1000)
    assert_equal("auto", cuda.xnor_gemm(a, b, 1000), want)
    assert cuda.resolve_algo("auto") in ("simt", "tensor")


# ---- conv kernel modes (BINMX_CUDA_CONV), border prefix table, im2col chunks, packed input -------
# auto (the default, used by every test above) runs im2col for these sizes; table and legacy are
# forced here. Every mode must give the reference bit for bit.

CONV_MODES = ["im2col", "table", "legacy"]

# (batch, C, H, W, F, kernel, stride, pad, dilate, groups, pad_value): shapes that stress the
# border tables: kh * kw > 32 (lane loops of the table kernel), kh > 32, outputs whose taps all
# fall into the padding (1x1 kernel with pad 2), asymmetric stride/pad/dilation, three words per
# channel group, groups of 65 channels, more filters than one table block handles (8).
EXTRA_CONV_CASES = [
    (2, 70, 9, 11, 12, (7, 7), (1, 1), (3, 3), (1, 1), 1, 0),
    (1, 65, 10, 8, 9, (5, 3), (2, 1), (4, 1), (2, 1), 1, -1),
    (1, 3, 5, 4, 4, (33, 1), (1, 1), (16, 0), (1, 1), 1, 0),
    (2, 5, 4, 3, 6, (1, 1), (1, 1), (2, 2), (1, 1), 1, 0),
    (2, 5, 4, 3, 6, (1, 1), (1, 1), (2, 2), (1, 1), 1, -1),
    (1, 9, 20, 13, 5, (11, 2), (3, 2), (6, 0), (3, 3), 1, 0),
    (2, 195, 7, 9, 6, (3, 3), (1, 1), (1, 1), (2, 2), 3, 0),
    (1, 130, 7, 7, 70, (3, 3), (1, 1), (1, 1), (1, 1), 1, -1),
    (3, 64, 7, 7, 16, (3, 3), (2, 2), (0, 0), (1, 1), 1, 0),
]  # fmt: skip


def _run_conv_extra(
    rng: np.random.Generator, case: tuple, algo: str, *, packed: str | None = None
) -> None:
    batch, c, h, w, f, kernel, stride, pad, dilate, groups, pad_value = case
    x = signed_data(rng, (batch, c, h, w))
    wt = signed_data(rng, (f, c // groups, *kernel))
    alpha = rng.uniform(0.01, 1.0, f).astype(np.float32)
    bias = rng.standard_normal(f).astype(np.float32)
    want = conv_reference(
        x, wt, stride=stride, pad=pad, dilate=dilate, groups=groups, pad_value=pad_value,
        alpha=alpha, bias=bias,
    )  # fmt: skip
    opts = dict(stride=stride, pad=pad, dilate=dilate, num_group=groups, pad_value=pad_value,
                alpha=alpha, bias=bias, algo=algo)  # fmt: skip
    wp = pack_weight_reference(wt)
    if packed is None:
        got = cuda.binary_conv2d(x, wp, **opts)
    else:
        xp = cuda.pack_nchw(x, num_group=groups)
        got = cuda.binary_conv2d_packed(xp, wp, channels=c, workspace=packed == "ws", **opts)
    assert_equal(f"binary_conv2d[{algo}, packed={packed}] {case}", got, want)


@gpu
@needs_gpu
@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("case", _conv_cases(40))
def test_binary_conv2d_grid_table_mode(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch, algo: str, case: tuple[int, ...]
) -> None:
    monkeypatch.setenv("BINMX_CUDA_CONV", "table")
    _run_conv(rng, case, algo)


@gpu
@needs_gpu
@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("case", _conv_cases(12))
def test_binary_conv2d_grid_legacy_mode(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch, algo: str, case: tuple[int, ...]
) -> None:
    monkeypatch.setenv("BINMX_CUDA_CONV", "legacy")
    _run_conv(rng, case, algo)


@gpu
@needs_gpu
@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("mode", CONV_MODES)
@pytest.mark.parametrize("case", EXTRA_CONV_CASES)
def test_binary_conv2d_modes_border_shapes(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch, algo: str, mode: str, case: tuple
) -> None:
    monkeypatch.setenv("BINMX_CUDA_CONV", mode)
    _run_conv_extra(rng, case, algo)


@gpu
@needs_gpu
@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize(
    "case",
    [
        (1, 256, 14, 14, 256, 3, 3, 1, 1, 1, 1, -1, 1),
        (2, 512, 7, 7, 512, 3, 3, 1, 1, 1, 1, 0, 0),
        (1, 128, 28, 28, 256, 3, 3, 2, 1, 1, 1, 0, 1),
    ],
)
def test_binary_conv2d_resnet18_layers_table_mode(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch, algo: str, case: tuple[int, ...]
) -> None:
    monkeypatch.setenv("BINMX_CUDA_CONV", "table")
    _run_conv(rng, case, algo)


@gpu
@needs_gpu
@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("cap", [8, 12196, 100000])
def test_binary_conv2d_im2col_chunks(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch, algo: str, cap: int
) -> None:
    """One image's im2col here is 2 groups * 42 pixels * 9 words * 8 = 6048 bytes: a cap of 8
    bytes falls back to table, 12196 runs chunks of 2, 2, 1 images, 100000 one chunk of 5."""
    monkeypatch.setenv("BINMX_CUDA_CONV", "im2col")
    monkeypatch.setenv("BINMX_CUDA_IM2COL_MAX_BYTES", str(cap))
    for pad_value in (0, -1):
        case = (5, 70, 6, 7, 10, (3, 3), (1, 1), (1, 1), (1, 1), 2, pad_value)
        _run_conv_extra(rng, case, algo)


@gpu
@needs_gpu
@pytest.mark.parametrize("mode", CONV_MODES)
@pytest.mark.parametrize("packed", ["ws", "alloc"])
def test_binary_conv2d_packed_input(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch, mode: str, packed: str
) -> None:
    """binmx_cuda_binary_conv2d_packed_ws (caller scratch) and _packed (allocated inside)."""
    monkeypatch.setenv("BINMX_CUDA_CONV", mode)
    for case in (EXTRA_CONV_CASES[0], EXTRA_CONV_CASES[6], EXTRA_CONV_CASES[8]):
        _run_conv_extra(rng, case, "auto", packed=packed)


@gpu
@needs_gpu
@pytest.mark.parametrize(("n", "c", "h", "w", "groups"), [(2, 13, 3, 5, 1), (1, 195, 4, 4, 3),
                                                          (3, 136, 2, 7, 2)])  # fmt: skip
def test_pack_nchw_matches_reference(
    rng: np.random.Generator, n: int, c: int, h: int, w: int, groups: int
) -> None:
    """Channel tails that end inside a byte and inside a word, several groups and words."""
    x = signed_data(rng, (n, c, h, w))
    cg = c // groups
    want = np.stack(
        [
            ref.pack_bits(
                np.ascontiguousarray(x[:, g * cg : (g + 1) * cg].transpose(0, 2, 3, 1)).reshape(
                    -1, cg
                )
            ).reshape(n, h, w, -1)
            for g in range(groups)
        ],
        axis=3,
    )
    assert_equal("pack_nchw", cuda.pack_nchw(x, num_group=groups), want)


@gpu
@needs_gpu
def test_bad_conv_mode_environment_is_an_argument_error(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = signed_data(rng, (1, 8, 5, 5))
    wp = pack_weight_reference(signed_data(rng, (4, 8, 3, 3)))
    monkeypatch.setenv("BINMX_CUDA_CONV", "fastest")
    with pytest.raises(cuda.CudaError, match="BINMX_CUDA_CONV to be auto, im2col, table"):
        cuda.binary_conv2d(x, wp, pad=1)
    monkeypatch.setenv("BINMX_CUDA_CONV", "im2col")
    monkeypatch.setenv("BINMX_CUDA_IM2COL_MAX_BYTES", "lots")
    with pytest.raises(cuda.CudaError, match="BINMX_CUDA_IM2COL_MAX_BYTES"):
        cuda.binary_conv2d(x, wp, pad=1)


# ---- CuPy arrays (device pointers, CuPy's current stream) --------------------------------------


def _cupy() -> ModuleType | None:
    if REASON is not None:
        return None
    try:
        import cupy
    except ImportError:
        return None
    return cupy


@gpu
@needs_gpu
def test_cupy_arrays_and_streams(rng: np.random.Generator) -> None:
    cp = _cupy()
    if cp is None:
        pytest.skip("CuPy not installed")
    x = signed_data(rng, (2, 70, 9, 11))
    wt = signed_data(rng, (24, 35, 3, 3))
    want = conv_reference(
        x, wt, stride=(1, 1), pad=(1, 1), dilate=(1, 1), groups=2, pad_value=0, alpha=None,
        bias=None,
    )  # fmt: skip
    with cp.cuda.Stream(non_blocking=True) as stream:
        wp = cuda.pack_weight(cp.asarray(wt))
        assert isinstance(wp, cp.ndarray)
        got = cuda.binary_conv2d(cp.asarray(x), wp, pad=1, num_group=2)
        stream.synchronize()
    assert_equal("cupy conv", cp.asnumpy(got), want)
    assert_equal("cupy pack_weight", cp.asnumpy(wp), pack_weight_reference(wt))
    a = ref.pack_bits(signed_data(rng, (40, 200)))
    b = ref.pack_bits(signed_data(rng, (50, 200)))
    got_g = cuda.xnor_gemm(cp.asarray(a), cp.asarray(b), 200)
    assert_equal("cupy gemm", cp.asnumpy(got_g), ref.xnor_gemm(a, b, 200))
    with pytest.raises(TypeError, match="all CuPy arrays"):
        cuda.xnor_gemm(cp.asarray(a), b, 200)


# ---- API version 2: the pieces of the MXNet "gpu" operators (train.cu) -------------------------
# The operators' "gpu" registration itself (src/operators/q_ops_gpu.cc) cannot run anywhere we
# have: no MXNet 1.9.1 build runs on sm_90, and the GPU machine has no MXNet. These tests check
# every C API call it makes against binmx.reference, and the two pipeline tests chain the calls
# exactly as q_ops_gpu.cc does.


def plain_data(rng: np.random.Generator, shape: tuple[int, ...], scale: float = 1.0) -> np.ndarray:
    """Random floats with exact +0.0 and -0.0 (no NaN: float products are compared here)."""
    x = (rng.standard_normal(shape) * scale).astype(np.float32)
    flat = x.reshape(-1)
    if flat.size >= 4:
        idx = rng.choice(flat.size, size=max(2, flat.size // 16), replace=False)
        flat[idx[0::2]] = 0.0
        flat[idx[1::2]] = -0.0
    return x


def assert_close(name: str, got: object, want: np.ndarray, *, rtol: float, atol: float) -> None:
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
    bad = ~(np.abs(got - want) <= atol + rtol * np.abs(want))
    if bad.any():
        where = np.argwhere(bad)[:5]
        details = ", ".join(f"{tuple(i)}: {got[tuple(i)]} != {want[tuple(i)]}" for i in where)
        pytest.fail(f"{name}: {int(bad.sum())} of {bad.size} outside tolerance, first: {details}")


def test_cuda_built_operator_library_runs_on_cpu_mxnet() -> None:
    """The BINMX_WITH_CUDA build of libbinmx_ops.so (with the "gpu" registration) loads into the
    CPU-only MXNet wheel and its cpu path still matches the reference. CI builds it in
    build/cuda-ops (.ci/run); skipped where that build or MXNet is absent."""
    lib = ROOT / "build/cuda-ops/src/operators/libbinmx_ops.so"
    if not lib.is_file():
        pytest.skip(f"{lib} not built (CI's BINMX_WITH_CUDA=ON step builds it)")
    if importlib.util.find_spec("mxnet") is None:
        pytest.skip("mxnet not installed here")
    syms = subprocess.run(["nm", "-DC", str(lib)], capture_output=True, text=True)
    if syms.returncode == 0:
        assert "binmx_cuda_binary_conv2d" in syms.stdout  # linked against libbinmx_cuda
    reference = ROOT / "python/binmx/reference.py"
    code = (
        "import importlib.util, numpy as np, mxnet as mx\n"
        f"mx.library.load({str(lib)!r}, verbose=False)\n"
        f"s = importlib.util.spec_from_file_location('r', {str(reference)!r})\n"
        "ref = importlib.util.module_from_spec(s); s.loader.exec_module(ref)\n"
        "rng = np.random.default_rng(0)\n"
        "x = rng.standard_normal((2, 70, 6, 6)).astype(np.float32)\n"
        "w = rng.standard_normal((5, 70, 3, 3)).astype(np.float32)\n"
        "y = mx.nd.QConvolution(mx.nd.array(x), mx.nd.array(w), kernel=(3, 3), num_filter=5,"
        " pad=(1, 1), no_bias=True).asnumpy()\n"
        "assert (y == ref.q_conv2d(x, w, pad=(1, 1))).all()\n"
        "a = mx.nd.QActivation(mx.nd.array(x)).asnumpy()\n"
        "assert (a == ref.q_activation(x)).all()\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-3000:]


@gpu
@needs_gpu
@pytest.mark.parametrize("bits", [1, 2, 3, 8, 31, 32])
def test_quantize_act_matches_reference(rng: np.random.Generator, bits: int) -> None:
    x = plain_data(rng, (7, 129))
    if 1 < bits < 32:  # exact ties of rint (half levels) and the clip edges
        levels = 2**bits - 1
        x.reshape(-1)[:6] = np.array([0.5 / levels, 1.5 / levels, 1.0, 1.5, -1.0, 0.0], np.float32)
    assert_equal(f"quantize_act[{bits}]", cuda.quantize_act(x, bits), ref.quantize_act(x, bits))


@gpu
@needs_gpu
@pytest.mark.parametrize("bits", [1, 2, 4, 32])
def test_quantize_weight_matches_reference(rng: np.random.Generator, bits: int) -> None:
    w = plain_data(rng, (16, 9, 3, 3))
    got, want = cuda.quantize_weight(w, bits), ref.quantize_weight(w, bits)
    if bits in (1, 32):
        assert_equal(f"quantize_weight[{bits}]", got, want)
    else:
        # CUDA's and the host's double tanh may differ by an ulp, which can move a value across
        # a rint tie: allow one quantisation step (2 / (2^k - 1)) and demand 99.9% exact.
        step = 2.0 / (2**bits - 1)
        assert_close(f"quantize_weight[{bits}]", got, want, rtol=0.0, atol=step * 1.001)
        assert np.mean(got == want) >= 0.999
    zeros = np.zeros((3, 5), np.float32)  # max |tanh| = 0: every weight maps to 2 q(1/2) - 1
    assert_equal("all-zero", cuda.quantize_weight(zeros, bits), ref.quantize_weight(zeros, bits))


@gpu
@needs_gpu
@pytest.mark.parametrize(("rows", "size"), [(1, 1), (3, 9), (64, 576), (5, 4608), (7, 65)])
def test_mean_abs_rows_is_bit_identical_to_the_cpu(
    rng: np.random.Generator, rows: int, size: int
) -> None:
    w = plain_data(rng, (rows, size))
    # src/float/quantize.h MeanAbsRows: sequential float64 sum, i ascending (np.add.accumulate is
    # sequential), divided by size, rounded to float32.
    acc = np.add.accumulate(np.abs(w.astype(np.float64)), axis=1)[:, -1]
    want = (acc / size).astype(np.float32)
    assert_equal("mean_abs_rows", cuda.mean_abs_rows(w), want)


@gpu
@needs_gpu
def test_affine_sign_and_affine_packing(rng: np.random.Generator) -> None:
    x = plain_data(rng, (3, 130, 5, 4))
    scale = rng.uniform(-2, 2, 130).astype(np.float32)
    shift = plain_data(rng, (130,))
    scale[:3] = 0.0  # x * 0 + shift: the shift alone decides, including -0.0
    aff = ref.input_affine(x, scale, shift, axis=1)
    assert_equal("affine_sign", cuda.affine_sign(x, scale, shift, axis=1), ref.sgn(aff))
    for groups in (1, 2):
        assert_equal(
            f"pack_nchw_affine[g={groups}]",
            cuda.pack_nchw_affine(x, scale, shift, num_group=groups),
            cuda.pack_nchw(aff, num_group=groups),
        )
    x2 = plain_data(rng, (9, 129))
    s2 = rng.uniform(-2, 2, 129).astype(np.float32)
    t2 = plain_data(rng, (129,))
    aff2 = ref.input_affine(x2, s2, t2, axis=1)
    assert_equal("pack_bits_affine", cuda.pack_bits_affine(x2, s2, t2), ref.pack_bits(aff2))
    assert_equal("affine_sign dense", cuda.affine_sign(x2, s2, t2, axis=1), ref.sgn(aff2))
    w = plain_data(rng, (11, 129))
    alpha = rng.uniform(0.1, 1.0, 11).astype(np.float32)
    bias = rng.standard_normal(11).astype(np.float32)
    dot = (ref.sgn(aff2).astype(np.int64) @ ref.sgn(w).astype(np.int64).T).astype(np.float32)
    got = cuda.fully_connected_packed(
        cuda.pack_bits_affine(x2, s2, t2), 129, ref.pack_bits(w), alpha=alpha, bias=bias
    )
    assert_equal("fully_connected_packed", got, dot * alpha[None, :] + bias[None, :])


@gpu
@needs_gpu
@pytest.mark.parametrize("grad_cancel", [1.0, 0.5, 0.0])
def test_ste_mask_matches_reference(rng: np.random.Generator, grad_cancel: float) -> None:
    x = plain_data(rng, (4, 33, 7))
    x.reshape(-1)[:4] = [grad_cancel, -grad_cancel, np.nextafter(grad_cancel, 2), 0.0]
    dy = rng.standard_normal(x.shape).astype(np.float32)
    want = ref.q_activation_grad(x, dy, act_bit=1, grad_cancel=grad_cancel)
    assert_equal("ste_mask", cuda.ste_mask(x, dy, grad_cancel), want)


@gpu
@needs_gpu
@pytest.mark.parametrize(("f", "cg", "kh", "kw"), [(1, 1, 1, 1), (8, 65, 3, 3), (4, 130, 2, 5)])
def test_unpack_and_scale_rows(rng: np.random.Generator, f: int, cg: int, kh: int, kw: int) -> None:
    w = plain_data(rng, (f, cg, kh, kw))
    assert_equal("unpack conv", cuda.unpack_weight(pack_weight_reference(w), cg), ref.sgn(w))
    w2 = plain_data(rng, (f, cg))
    assert_equal("unpack dense", cuda.unpack_weight(ref.pack_bits(w2), cg), ref.sgn(w2))
    alpha = rng.uniform(0.1, 2.0, f).astype(np.float32)
    assert_equal("scale_rows", cuda.scale_rows(w, alpha), w * alpha[:, None, None, None])


@gpu
@needs_gpu
def test_bias_grad_and_finish_weight_grad(rng: np.random.Generator) -> None:
    dy = rng.standard_normal((5, 12, 9, 7)).astype(np.float32)
    # float64 sums in another order than NumPy's, rounded once to float32: 1 ulp of float32.
    assert_close("bias_grad", cuda.bias_grad(dy), dy.astype(np.float64).sum(axis=(0, 2, 3)),
                 rtol=2e-7, atol=1e-6)  # fmt: skip
    g = rng.standard_normal((12, 70)).astype(np.float32)
    w = plain_data(rng, (12, 70))
    wq = ref.quantize_weight(w, 1)
    alpha = ref.scaling_alpha(w)
    dw, dalpha = cuda.finish_weight_grad(g, w, wq, alpha)
    want_dw, want_da = ref._finish_weight_grad(g.astype(np.float64), w, wq, alpha)
    # dalpha: float64 sum rounded to float32; dw: three float32 roundings per element.
    assert_close("dalpha", dalpha, want_da, rtol=2e-7, atol=1e-6)
    assert_close("dw", dw, want_dw, rtol=1e-6, atol=1e-6)


CONV_FLOAT_CASES = [
    # (n, c, h, w, f, kh, kw, stride, pad, dilate, groups, pad_value)
    (1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0),
    (2, 5, 7, 6, 4, 3, 3, 1, 1, 1, 1, 0),
    (3, 8, 9, 9, 6, 3, 2, 2, 1, 1, 2, 1),
    (2, 6, 10, 8, 4, 3, 3, 1, 2, 2, 2, -1),
    (10, 256, 28, 28, 8, 3, 3, 1, 1, 1, 1, 0),  # 2 chunks of images (64 MiB col buffer)
]


@gpu
@needs_gpu
@pytest.mark.parametrize("case", CONV_FLOAT_CASES)
@pytest.mark.parametrize("quant", ["none", "sign"])
def test_float_conv2d_forward_and_backward(
    rng: np.random.Generator, case: tuple[int, ...], quant: str
) -> None:
    n, c, h, wd, f, kh, kw, s, p, d, g, pv = case
    x = plain_data(rng, (n, c, h, wd))
    w = plain_data(rng, (f, c // g, kh, kw))
    alpha = rng.uniform(0.1, 1.0, f).astype(np.float32)
    bias = rng.standard_normal(f).astype(np.float32)
    kwargs = dict(stride=s, pad=p, dilate=d, num_group=g, pad_value=pv)
    geom = dict(stride=(s, s), pad=(p, p), dilate=(d, d), groups=g, pad_value=float(pv))
    xq = ref.sgn(x) if quant == "sign" else x
    conv = ref.conv2d(xq, w, **geom)
    want = (conv * alpha[None, :, None, None]) + bias[None, :, None, None]
    got = cuda.float_conv2d(x, w, quant=quant, alpha=alpha, bias=bias, **kwargs)
    # float32 FMA accumulation over K = C/g*kh*kw terms of size ~1: error ~ K * 2^-24 * |terms|.
    k = (c // g) * kh * kw
    tol = 4e-7 * k * (np.abs(xq).max() * np.abs(w).max() + 1)
    assert_close("float_conv2d", got, want, rtol=1e-6, atol=tol)
    dy = rng.standard_normal(got.shape).astype(np.float32)
    dx, dw = cuda.float_conv2d_backward(x, w, dy, quant=quant, x_mask=x, grad_cancel=1.0, **kwargs)
    want_dx, want_dw = ref.conv2d_grads(xq, w, dy, **geom)
    want_dx = want_dx * (np.abs(x) <= np.float32(1.0))
    f_terms = (f // g) * kh * kw  # terms per dx element
    assert_close("dx", dx, want_dx, rtol=1e-6, atol=4e-7 * f_terms * 4 * np.abs(w).max())
    px = n * got.shape[2] * got.shape[3]  # terms per dw element
    assert_close("dw", dw, want_dw, rtol=1e-5, atol=4e-7 * px * 4 * max(1.0, np.abs(xq).max()))
    dx_nomask, _ = cuda.float_conv2d_backward(x, w, dy, quant=quant, **kwargs)
    assert_close("dx unmasked", dx_nomask, ref.conv2d_grads(xq, w, dy, **geom)[0],
                 rtol=1e-6, atol=4e-7 * f_terms * 4 * np.abs(w).max())  # fmt: skip
    again = cuda.float_conv2d_backward(x, w, dy, quant=quant, x_mask=x, **kwargs)
    assert_equal("deterministic dx", again[0], dx)
    assert_equal("deterministic dw", again[1], dw)


@gpu
@needs_gpu
@pytest.mark.parametrize(("rows", "depth", "hidden"), [(1, 1, 1), (3, 65, 10), (33, 513, 130)])
@pytest.mark.parametrize("quant", ["none", "sign"])
def test_float_dense_forward_and_backward(
    rng: np.random.Generator, rows: int, depth: int, hidden: int, quant: str
) -> None:
    x = plain_data(rng, (rows, depth))
    w = plain_data(rng, (hidden, depth))
    alpha = rng.uniform(0.1, 1.0, hidden).astype(np.float32)
    bias = rng.standard_normal(hidden).astype(np.float32)
    xq = (ref.sgn(x) if quant == "sign" else x).astype(np.float64)
    want = xq @ w.T.astype(np.float64) * alpha[None, :] + bias[None, :]
    got = cuda.float_dense(x, w, quant=quant, alpha=alpha, bias=bias)
    # float32 FMA accumulation over `depth` terms (|x|, |w| <~ 5): ~depth * 2^-24 * 25.
    assert_close("float_dense", got, want, rtol=1e-6, atol=2e-6 * depth + 1e-6)
    dy = rng.standard_normal((rows, hidden)).astype(np.float32)
    dx, dw = cuda.float_dense_backward(x, w, dy, quant=quant, x_mask=x, grad_cancel=0.5)
    want_dx = dy.astype(np.float64) @ w.astype(np.float64) * (np.abs(x) <= np.float32(0.5))
    want_dw = dy.astype(np.float64).T @ xq
    assert_close("dx", dx, want_dx, rtol=1e-6, atol=2e-6 * hidden + 1e-6)
    assert_close("dw", dw, want_dw, rtol=1e-6, atol=2e-6 * rows + 1e-6)


@gpu
@needs_gpu
@pytest.mark.parametrize(("act_bit", "weight_bit"), [(1, 1), (2, 2), (1, 4), (32, 32)])
def test_conv_operator_pipeline_matches_reference(
    rng: np.random.Generator, act_bit: int, weight_bit: int
) -> None:
    """The calls of q_ops_gpu.cc's QConvolution forward/backward (scaling_factor=True), chained
    the same way, against reference.q_conv2d / q_conv2d_grads."""
    x = plain_data(rng, (2, 70, 8, 8))
    w = plain_data(rng, (6, 70, 3, 3), 0.5)
    bias = rng.standard_normal(6).astype(np.float32)
    geom = dict(stride=1, pad=1)
    alpha = cuda.mean_abs_rows(w)
    if act_bit == 1 and weight_bit == 1:  # the binary kernel: exact
        out = cuda.binary_conv2d(x, cuda.pack_weight(w), alpha=alpha, bias=bias, **geom)
        want = conv_reference(x, w, stride=(1, 1), pad=(1, 1), dilate=(1, 1), groups=1,
                              pad_value=0, alpha=alpha, bias=bias)  # fmt: skip
        assert_equal("binary forward", out, want)
    quant = "sign" if act_bit == 1 else "none"
    xin = x if act_bit in (1, 32) else cuda.quantize_act(x, act_bit)
    wq = cuda.quantize_weight(w, weight_bit)
    out = cuda.float_conv2d(xin, wq, quant=quant, alpha=alpha, bias=bias, **geom)
    want = ref.q_conv2d(x, w, bias, pad=(1, 1), act_bit=act_bit, weight_bit=weight_bit,
                        scaling_factor=True)  # fmt: skip
    # float32 sums of 630 terms vs the float64 reference; k-bit weights may differ by one
    # level where tanh differs by an ulp (quantize_weight test), hence the 2e-3 for those.
    tol = 2e-3 if 1 < weight_bit < 32 else 1e-4
    assert_close("forward", out, want, rtol=1e-5, atol=tol * np.abs(want).max())
    dy = rng.standard_normal(out.shape).astype(np.float32)
    dx, g = cuda.float_conv2d_backward(
        xin, cuda.scale_rows(wq, alpha), dy, quant=quant,
        x_mask=x if act_bit < 32 else None, **geom,
    )  # fmt: skip
    dw, _ = cuda.finish_weight_grad(g, w, wq, alpha)
    db = cuda.bias_grad(dy)
    grads = ref.q_conv2d_grads(x, w, dy, pad=(1, 1), act_bit=act_bit, weight_bit=weight_bit,
                               scaling_factor=True)  # fmt: skip
    for name, got_g in (("data", dx), ("weight", dw), ("bias", db)):
        want_g = grads[name]
        assert_close(name, got_g, want_g, rtol=1e-5, atol=tol * max(np.abs(want_g).max(), 1e-3))
