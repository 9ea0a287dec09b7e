"""Bad-input suite of the model converter: every run in its own fork()ed child.

Each case breaks one thing -- the params file, the symbol JSON, the model, the command line or
the place the outputs go (a missing, read-only or full directory, an output name that is a
directory) -- and runs ``model_converter`` on it. Every case must exit non-zero with one
line on stderr naming the cause, leave no new file behind (no output, no temporary file) and
leave every input byte-for-byte as it was (SHA-256 of every file before and after). A crash
or a hang counts against the case.

The full-disk cases need a small tmpfs (``mount -t tmpfs -o size=...``), the read-only ones
a read-only mount: both need root and are skipped with the reason otherwise.

``python tests/test_bad_input_converter.py`` prints the counts (docs/reliability.md); the
sanitizer test runs it the same way under ASan/UBSan.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import binmx
import mxnet as mx
import numpy as np
import pytest
from binmx.converter_cli import main as converter_main

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from forked import Tally, run_forked

TIMEOUT = float(os.environ.get("BINMX_BAD_INPUT_TIMEOUT", "120"))
PREFIX = "net"
PARAMS = f"{PREFIX}-0003.params"
SYMBOL = f"{PREFIX}-symbol.json"


def small_model() -> mx.sym.Symbol:
    """QConvolution -> BatchNorm -> QFullyConnected -> float FC: small, and with enough float
    weights (64 x 256) that its outputs span several tmpfs pages."""
    x = mx.sym.var("data")
    x = mx.sym.QConvolution(x, kernel=(3, 3), num_filter=16, pad=(1, 1), name="qconv1")
    x = mx.sym.BatchNorm(x, name="bn1")
    x = mx.sym.Flatten(x)
    x = mx.sym.QFullyConnected(x, num_hidden=256, no_bias=True, name="qfc2")
    x = mx.sym.FullyConnected(x, num_hidden=64, name="fc3")
    return mx.sym.SoftmaxOutput(x, name="softmax")


def save_model(directory: Path) -> None:
    sym = small_model()
    shapes, _, aux_shapes = sym.infer_shape(data=(1, 3, 8, 8))
    rng = np.random.default_rng(0)
    args = {
        n: mx.nd.array(rng.standard_normal(s).astype(np.float32))
        for n, s in zip(sym.list_arguments(), shapes, strict=True)
        if n not in ("data", "softmax_label")
    }
    aux = {
        n: mx.nd.array(np.abs(rng.standard_normal(s)).astype(np.float32) + 0.5)
        for n, s in zip(sym.list_auxiliary_states(), aux_shapes, strict=True)
    }
    directory.mkdir(parents=True, exist_ok=True)
    sym.save(str(directory / SYMBOL))
    saved = {f"arg:{k}": v for k, v in args.items()}
    saved.update({f"aux:{k}": v for k, v in aux.items()})
    mx.nd.save(str(directory / PARAMS), saved)


def snapshot(*dirs: Path) -> dict[str, str]:
    """SHA-256 of every file (hidden ones included) under the given directories."""
    out = {}
    for d in dirs:
        if not d.is_dir():
            continue
        for root, subdirs, files in os.walk(d):
            for name in subdirs + files:
                p = Path(root) / name
                if p.is_symlink() or p.is_dir():
                    out[str(p)] = "link" if p.is_symlink() else "dir"
                else:
                    out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _edit_json(path: Path, edit: Callable[[dict], object]) -> None:
    graph = json.loads(path.read_text())
    result = edit(graph)
    path.write_text(json.dumps(graph if result is None else result))


def _set_attr(node_name: str, key: str, value: str) -> Callable[[dict], None]:
    def edit(graph: dict) -> None:
        for node in graph["nodes"]:
            if node["name"] == node_name:
                node.setdefault("attrs", {})[key] = value

    return edit


def _edit_params(path: Path, edit: Callable[[dict], object]) -> None:
    saved = mx.nd.load(str(path))
    result = edit(saved)
    mx.nd.save(str(path), saved if result is None else result)


def _set_param(key: str, value: np.ndarray) -> Callable[[dict], None]:
    def edit(saved: dict) -> None:
        saved[key] = mx.nd.array(value, dtype=value.dtype)

    return edit


class Case:
    """``setup(case_dir, out_dir) -> argv``; the run must fail naming ``needle``."""

    def __init__(
        self,
        name: str,
        setup: Callable[[Path, Path], list[str]],
        needle: str,
        *,
        needs: str | None = None,
    ) -> None:
        self.name, self.setup, self.needle, self.needs = name, setup, needle, needs


def _cases() -> list[Case]:
    cases: list[Case] = []

    def case(name: str, needle: str, needs: str | None = None):
        def deco(fn: Callable[[Path, Path], list[str] | None]) -> None:
            def setup(d: Path, out: Path) -> list[str]:
                argv = fn(d, out)
                return argv if isinstance(argv, list) else [str(d / PARAMS)]

            cases.append(Case(name, setup, needle, needs=needs))

        return deco

    params = lambda d: d / PARAMS  # noqa: E731
    symbol = lambda d: d / SYMBOL  # noqa: E731

    # ---- the params file -------------------------------------------------------------
    case("params missing", "not found")(lambda d, o: params(d).unlink())
    case("params empty", "empty")(lambda d, o: params(d).write_bytes(b""))
    for frac in (0.5, 0.9):
        case(f"params truncated to {frac}", "cannot read params")(
            lambda d, o, f=frac: params(d).write_bytes(
                params(d).read_bytes()[: int(len(params(d).read_bytes()) * f)]
            )
        )
    case("params truncated by one byte", "cannot read params")(
        lambda d, o: params(d).write_bytes(params(d).read_bytes()[:-1])
    )
    case("params one byte", "cannot read params")(lambda d, o: params(d).write_bytes(b"\x12"))
    case("params random bytes", "cannot read params")(
        lambda d, o: params(d).write_bytes(np.random.default_rng(1).bytes(5000))
    )
    case("params header flipped", "cannot read params")(
        lambda d, o: params(d).write_bytes(b"\xff" * 8 + params(d).read_bytes()[8:])
    )

    @case("params is a directory", "is a directory")
    def _(d: Path, o: Path) -> None:
        params(d).unlink()
        params(d).mkdir()

    @case("params dangling symlink", "not found")
    def _(d: Path, o: Path) -> None:
        params(d).unlink()
        params(d).symlink_to(d / "nowhere.params")

    case("params is a JSON text", "cannot read params")(
        lambda d, o: params(d).write_text('{"arg:x": 1}')
    )
    case("params keys without arg:/aux:", "expected 'arg:NAME'")(
        lambda d, o: _edit_params(params(d), lambda s: {k.split(":")[1]: v for k, v in s.items()})
    )
    case("params key with empty name", "expected 'arg:NAME'")(
        lambda d, o: _edit_params(params(d), lambda s: {**s, "arg:": mx.nd.ones((1,))})
    )
    case("params saved as a list", "holds no named arrays")(
        lambda d, o: _edit_params(params(d), lambda s: list(s.values()))
    )
    case("params with no arrays", "holds no named arrays")(
        lambda d, o: _edit_params(params(d), lambda s: {})
    )
    case("params unknown argument", "unknown arguments")(
        lambda d, o: _edit_params(params(d), lambda s: {**s, "arg:stray": mx.nd.ones((2,))})
    )
    case("params unknown aux state", "unknown aux states")(
        lambda d, o: _edit_params(params(d), lambda s: {**s, "aux:stray": mx.nd.ones((2,))})
    )
    case("params missing aux state", "missing aux states")(
        lambda d, o: _edit_params(
            params(d), lambda s: {k: v for k, v in s.items() if k != "aux:bn1_moving_var"}
        )
    )
    case("params missing binary weight", "qfc2_weight")(
        lambda d, o: _edit_params(
            params(d), lambda s: {k: v for k, v in s.items() if k != "arg:qfc2_weight"}
        )
    )
    for value in ("nan", "inf", "-inf"):

        def nonfinite(d: Path, o: Path, v: str = value) -> None:
            w = mx.nd.load(str(params(d)))["arg:qconv1_weight"].asnumpy()
            w[1, 2, 0, 1] = float(v)
            _edit_params(params(d), _set_param("arg:qconv1_weight", w))

        case(f"binary weight holds {value}", "NaN/Inf")(nonfinite)
    for dtype in (np.float64, np.int32, np.float16):
        case(f"binary weight dtype {np.dtype(dtype).name}", "qconv1_weight")(
            lambda d, o, t=dtype: _edit_params(
                params(d), _set_param("arg:qconv1_weight", np.ones((16, 3, 3, 3), t))
            )
        )
    case("conv weight shape does not match the symbol", "qconv1_weight")(
        lambda d, o: _edit_params(
            params(d), _set_param("arg:qconv1_weight", np.ones((16, 3, 5, 5), np.float32))
        )
    )
    case("fc weight shape does not match the symbol", "qfc2_weight")(
        lambda d, o: _edit_params(
            params(d), _set_param("arg:qfc2_weight", np.ones((256, 1000), np.float32))
        )
    )
    case("float fc weight shape does not match the symbol", "fc3_weight")(
        lambda d, o: _edit_params(
            params(d), _set_param("arg:fc3_weight", np.ones((64, 100), np.float32))
        )
    )
    case("conv weight rank 2", "qconv1_weight")(
        lambda d, o: _edit_params(
            params(d), _set_param("arg:qconv1_weight", np.ones((16, 27), np.float32))
        )
    )

    # ---- the symbol file -------------------------------------------------------------
    case("symbol missing", "symbol file not found")(lambda d, o: symbol(d).unlink())
    case("symbol empty", "invalid symbol file")(lambda d, o: symbol(d).write_text(""))
    case("symbol invalid JSON", "invalid symbol file")(
        lambda d, o: symbol(d).write_text('{"nodes": [oops')
    )
    for text in (
        "[]",
        "[1, 2]",
        "3",
        "null",
        '"nodes"',
        "{}",
        '{"nodes": 5}',
        '{"nodes": [], "heads": []}',
        '{"nodes": [{"op": "null"}], "heads": [[0,0,0]]}',
    ):
        case(f"symbol JSON {text}", "invalid symbol file")(
            lambda d, o, t=text: symbol(d).write_text(t)
        )
    case("symbol not UTF-8", "invalid symbol file")(
        lambda d, o: symbol(d).write_bytes(b"\xff\xfe" + symbol(d).read_bytes())
    )

    @case("symbol is a directory", "symbol file")
    def _(d: Path, o: Path) -> None:
        symbol(d).unlink()
        symbol(d).mkdir()

    def bad_index(value: int) -> Callable[[Path, Path], None]:
        def setup(d: Path, o: Path) -> None:
            def edit(graph: dict) -> None:
                for node in graph["nodes"]:
                    if node["name"] == "qfc2":
                        node["inputs"][1][0] = value

            _edit_json(symbol(d), edit)

        return setup

    case("symbol input index past the nodes", "invalid symbol file")(bad_index(999))
    case("symbol input index negative", "invalid symbol file")(bad_index(-1))
    case("symbol head index past the nodes", "invalid symbol file")(
        lambda d, o: _edit_json(symbol(d), lambda g: {**g, "heads": [[999, 0, 0]]})
    )
    case("symbol unknown operator", "invalid symbol file")(
        lambda d, o: _edit_json(
            symbol(d),
            lambda g: [n.update(op="NoSuchOp") for n in g["nodes"] if n["name"] == "fc3"] and None,
        )
    )
    # Crafted attributes: the verification run must fail with the operator's clear error.
    for attr, value, needle in [
        ("kernel", f"({2**58 + 1}, 3)", "kernel"),
        ("dilate", f"({2**62}, 1)", "dilate"),
        ("pad", f"({2**31}, 0)", "pad"),
        ("pad", f"({2**30}, {2**30})", "pad"),
        ("stride", "(0, 1)", "stride"),
        ("num_filter", "0", "num_filter"),
        ("act_bit", "x", "act_bit"),
        ("weight_bit", "99", "weight_bit"),
        ("no_bias", "maybe", "no_bias"),
        ("num_group", "5", "num_group"),
    ]:
        case(f"crafted qconv1 {attr}={value}", needle)(
            lambda d, o, a=attr, v=value: _edit_json(symbol(d), _set_attr("qconv1", a, v))
        )
    case("already converted", "already converted")(
        lambda d, o: _edit_json(symbol(d), _set_attr("qconv1", "binarized_weights_only", "True"))
    )

    @case("no layer to pack", "no QConvolution/QFullyConnected layer with weight_bit <= 8")
    def _(d: Path, o: Path) -> None:
        _edit_json(symbol(d), _set_attr("qconv1", "act_bit", "2"))
        _edit_json(symbol(d), _set_attr("qconv1", "weight_bit", "12"))
        _edit_json(symbol(d), _set_attr("qfc2", "act_bit", "32"))

    @case("binary layer without its weight input", "qfc2")
    def _(d: Path, o: Path) -> None:
        def edit(graph: dict) -> None:
            for node in graph["nodes"]:
                if node["name"] == "qfc2":
                    node["inputs"] = node["inputs"][:1]

        _edit_json(symbol(d), edit)

    @case("two data inputs", "data input")
    def _(d: Path, o: Path) -> None:
        sym = mx.sym.load(str(symbol(d)))
        mx.sym.Group([sym, mx.sym.var("data2") * 2]).save(str(symbol(d)))

    # ---- the command line -------------------------------------------------------------
    @case("name without epoch", "PREFIX-EPOCH.params")
    def _(d: Path, o: Path) -> list[str]:
        shutil.copy(params(d), d / "net.params")
        return [str(d / "net.params")]

    case("--data-shape that does not fit", "--data-shape (1, 4, 8, 8)")(
        lambda d, o: [str(params(d)), "--data-shape", "1,4,8,8"]
    )
    case("--data-shape not integers", "--data-shape")(
        lambda d, o: [str(params(d)), "--data-shape", "a,b"]
    )
    case("--data-shape negative", "--data-shape")(
        lambda d, o: [str(params(d)), "--data-shape", "1,-3,8,8"]
    )
    case("--summary of a missing file", "not found")(
        lambda d, o: ["--summary", str(d / "gone-0001.params")]
    )

    # ---- where the outputs go --------------------------------------------------------------
    case("output dir missing", "does not exist")(
        lambda d, o: [str(params(d)), "--output-dir", str(o / "missing")]
    )

    @case("output dir is a file", "does not exist")
    def _(d: Path, o: Path) -> list[str]:
        (o / "file").write_text("x")
        return [str(params(d)), "--output-dir", str(o / "file")]

    case("output dir /proc", "writ")(lambda d, o: [str(params(d)), "--output-dir", "/proc"])

    def output_dirs(which: tuple[str, ...]) -> Callable[[Path, Path], list[str]]:
        def setup(d: Path, o: Path) -> list[str]:
            for name in which:
                (o / name).mkdir()
                (o / name / "keep.txt").write_text("inside")
            return [str(params(d)), "--output-dir", str(o)]

        return setup

    case("output json is a directory", "is a directory")(output_dirs((f"binarized_{SYMBOL}",)))
    case("output params is a directory", "is a directory")(output_dirs((f"binarized_{PARAMS}",)))
    case("both outputs are directories", "is a directory")(
        output_dirs((f"binarized_{SYMBOL}", f"binarized_{PARAMS}"))
    )

    @case("output json is a symlink to a directory", "is a directory")
    def _(d: Path, o: Path) -> list[str]:
        (o / "real").mkdir()
        (o / f"binarized_{SYMBOL}").symlink_to(o / "real")
        return [str(params(d)), "--output-dir", str(o)]

    @case("output json is a directory, old params output kept", "is a directory")
    def _(d: Path, o: Path) -> list[str]:
        (o / f"binarized_{PARAMS}").write_bytes(b"an older conversion")
        (o / f"binarized_{SYMBOL}").mkdir()
        return [str(params(d)), "--output-dir", str(o)]

    # Read-only and full file systems (root: a tmpfs mounted for the case).
    case("output dir on a read-only file system", "writ", needs="ro")(
        lambda d, o: [str(params(d)), "--output-dir", str(o)]
    )
    case("input dir on a read-only file system", "writ", needs="ro-input")(lambda d, o: None)
    for pages in (0, 1, 2, 4, 8, 12):
        case(
            f"full disk, {pages} free page(s) on the output fs",
            "No space left on device",
            needs=f"full:{pages}",
        )(lambda d, o: [str(params(d)), "--output-dir", str(o)])
    case(
        "full disk after the params output (the symbol write fails)",
        "No space left on device",
        needs="full-after-params",
    )(lambda d, o: [str(params(d)), "--output-dir", str(o)])
    case("full disk, old outputs kept", "No space left on device", needs="full-old:2")(
        lambda d, o: [str(params(d)), "--output-dir", str(o)]
    )
    case("no free inodes on the output fs", "No space left on device", needs="inodes")(
        lambda d, o: [str(params(d)), "--output-dir", str(o)]
    )
    return cases


CASES = _cases()


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


@contextlib.contextmanager
def _tmpfs(options: str) -> Iterator[Path]:
    mnt = Path(tempfile.mkdtemp(prefix="binmx-tmpfs-"))
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if res.returncode != 0:
        mnt.rmdir()
        raise OSError(f"mount -t tmpfs failed: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        mnt.rmdir()


def _remount_ro(mnt: Path) -> None:
    res = subprocess.run(["mount", "-o", "remount,ro", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        raise OSError(f"remount,ro failed: {res.stderr.strip()}")


def _fill(mnt: Path, free_pages: int) -> None:
    """Fill the tmpfs until only ``free_pages`` 4 KiB pages are left."""
    st = os.statvfs(mnt)
    free = st.f_bavail * st.f_frsize - free_pages * 4096
    with open(mnt / ".filler", "wb") as f, contextlib.suppress(OSError):
        f.write(b"\0" * max(free, 0))
    st = os.statvfs(mnt)
    assert st.f_bavail <= free_pages, (st.f_bavail, free_pages)


_SIZES: dict[str, tuple[int, int]] = {}


def _output_sizes(base: Path) -> tuple[int, int]:
    """Sizes of the two outputs (params, symbol) of the unbroken model, converted once."""
    if str(base) not in _SIZES:
        with tempfile.TemporaryDirectory() as tmp:

            def child() -> int:
                with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
                    return converter_main([str(base / PARAMS), "--output-dir", tmp])

            code = run_forked(child)
            assert code.kind == "ok" and code.value == 0, code
            _SIZES[str(base)] = (
                os.path.getsize(os.path.join(tmp, f"binarized_{PARAMS}")),
                os.path.getsize(os.path.join(tmp, f"binarized_{SYMBOL}")),
            )
    return _SIZES[str(base)]


def run_case(case: Case, base: Path, work: Path) -> tuple[str, str]:
    """Run one case; return (verdict, detail): clear / crash / hang / wrong."""
    d = work / "in"
    out = work / "out"
    shutil.copytree(base, d)
    out.mkdir()
    with contextlib.ExitStack() as stack:
        if case.needs:
            if not _is_root():
                return "skip", "needs root (mount -t tmpfs)"
            kind, _, arg = case.needs.partition(":")
            if kind == "inodes":
                mnt = stack.enter_context(_tmpfs("size=4m,nr_inodes=3"))
                with contextlib.suppress(OSError):
                    for i in range(8):
                        (mnt / f"f{i}").write_text("x")
                out = mnt
            elif kind == "full-after-params":
                # Room for the params output (whole pages) and none for the symbol file.
                mnt = stack.enter_context(_tmpfs("size=1m"))
                _fill(mnt, -(-_output_sizes(base)[0] // 4096))
                out = mnt
            elif kind in ("full", "full-old"):
                mnt = stack.enter_context(_tmpfs("size=1m"))
                if kind == "full-old":
                    (mnt / f"binarized_{PARAMS}").write_bytes(b"older params")
                    (mnt / f"binarized_{SYMBOL}").write_bytes(b"older symbol")
                _fill(mnt, int(arg))
                out = mnt
            elif kind == "ro":
                mnt = stack.enter_context(_tmpfs("size=1m"))
                _remount_ro(mnt)
                out = mnt
            elif kind == "ro-input":
                mnt = stack.enter_context(_tmpfs("size=4m"))
                shutil.copytree(d, mnt / "in")
                shutil.rmtree(d)
                d = mnt / "in"
                _remount_ro(mnt)
        argv = case.setup(d, out) if case.needs != "ro-input" else [str(d / PARAMS)]
        before = snapshot(d, out)
        err_path = work / "stderr.txt"

        def child() -> int:
            fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 2)
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", buffering=0), write_through=True)
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
            try:
                return converter_main(argv)
            except SystemExit as exc:  # argparse
                return int(exc.code or 0)

        res = run_forked(child, TIMEOUT)
        after = snapshot(d, out)
        err = err_path.read_text(errors="replace") if err_path.exists() else ""
    if res.kind in ("crash", "hang"):
        return res.kind, f"{res.detail}; stderr: {err[-800:]}"
    if res.kind != "ok" or not isinstance(res.value, int) or res.value == 0:
        return "wrong", f"exit {res.value!r} ({res.kind}: {res.detail[-300:]}); stderr: {err}"
    ours = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("[")]
    if res.value == 2 and ours and ours[0].startswith("usage:"):
        ours = ours[1:]  # argparse's usage line before its one-line error
    if len(ours) != 1 or not ours[0].startswith("model_converter: error:"):
        return "wrong", f"want one error line, got {len(ours)}: {err[-800:]}"
    if case.needle not in ours[0] or "Traceback" in err:
        return "wrong", f"error does not name {case.needle!r}: {ours[0]}"
    if after != before:
        changed = sorted(set(after.items()) ^ set(before.items()))
        return "wrong", f"files changed: {changed[:4]}"
    return "clear", ours[0]


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("model")
    save_model(base)
    return base


def test_suite_size() -> None:
    assert len(CASES) >= 60, len(CASES)
    assert len({c.name for c in CASES}) == len(CASES), "case names must be unique"


def test_the_unbroken_model_converts(base_model: Path, tmp_path: Path) -> None:
    """The baseline every case breaks: it converts (and verifies) cleanly."""
    d = tmp_path / "m"
    shutil.copytree(base_model, d)
    assert converter_main([str(d / PARAMS)]) == 0
    assert (d / f"binarized_{SYMBOL}").is_file() and (d / f"binarized_{PARAMS}").is_file()
    assert not [p for p in d.iterdir() if p.name.startswith(".")]


def test_failed_rename_restores_the_old_outputs(
    base_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure between the two renames (the first output already in place) puts the older
    outputs back and leaves no temporary file."""
    import binmx.converter as conv

    d = tmp_path / "m"
    shutil.copytree(base_model, d)
    old = {f"binarized_{PARAMS}": b"older params", f"binarized_{SYMBOL}": b"older symbol"}
    for name, data in old.items():
        (d / name).write_bytes(data)
    before = snapshot(d)
    real_replace = os.replace
    calls = []

    def failing_replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(conv.os, "replace", failing_replace)
    with pytest.raises(binmx.ConversionError, match="No space left on device") as info:
        binmx.convert_checkpoint(str(d / PARAMS), verify_outputs=False)
    assert len(str(info.value).splitlines()) == 1
    assert len(calls) >= 2  # the first output was in place when the second rename failed
    assert snapshot(d) == before


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_converter_input(case: Case, base_model: Path, tmp_path: Path) -> None:
    verdict, detail = run_case(case, base_model, tmp_path)
    if verdict == "skip":
        pytest.skip(detail)
    assert verdict == "clear", f"{case.name}: {verdict}: {detail}"


if __name__ == "__main__":
    tally = Tally()
    skipped = 0
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        save_model(base)
        for i, c in enumerate(CASES):
            work = Path(tmp) / f"case{i}"
            work.mkdir()
            verdict, detail = run_case(c, base, work)
            if verdict == "skip":
                skipped += 1
                continue
            tally.add(verdict)
            if verdict != "clear":
                print(f"{verdict}: {c.name}: {detail}")
    print(tally.line("converter") + (f", skipped {skipped}" if skipped else ""))
    sys.exit(0 if tally.counts["clear"] == tally.tried else 1)
