"""``model_converter``: pack a trained model's 1..8-bit weights (command-line front end).

    model_converter PREFIX-EPOCH.params [--output-dir DIR] [--no-verify] [--fold]
                    [--data-shape N,C,H,W]
    model_converter --summary PREFIX-symbol.json|PREFIX-EPOCH.params --data-shape N,C,H,W

Exit status 0 on success; on failure 1 (2 for bad usage) with a one-line reason on stderr and
nothing written.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

__all__ = ["main", "summary_main"]


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected N,C,H,W integers, got {text!r}") from exc
    if not shape or any(v <= 0 for v in shape):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return shape


def _one_line(text: str) -> str:
    """The last meaningful line of a (possibly multi-line MXNet) message."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if not ln.startswith(("Stack trace", "[bt]", "File ", "Traceback")):
            return ln[:500]
    return lines[-1][:500] if lines else "(no message)"


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error answered in one line (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="model_converter",
        description="Pack the 1..8-bit weights of a binmx model's Q layers into uint64 words.",
    )
    p.add_argument("params", help="checkpoint PREFIX-EPOCH.params (PREFIX-symbol.json beside it)")
    p.add_argument("--output-dir", default=None, help="where to write (default: beside input)")
    p.add_argument("--no-verify", action="store_true", help="skip the before/after comparison")
    p.add_argument(
        "--data-shape",
        type=_shape,
        default=None,
        help="input shape for verification/summary, e.g. 1,1,28,28",
    )
    p.add_argument(
        "--fold",
        action="store_true",
        help="also fold BatchNorm into the binary layers (fast inference)",
    )
    p.add_argument(
        "--summary",
        action="store_true",
        help="print a per-layer model summary instead of converting",
    )
    return p


def _print_summary(path: str, data_shape: tuple[int, ...] | None) -> int:
    import mxnet as mx

    import binmx
    from binmx._graph import input_shapes
    from binmx.converter import ConversionError, load_checkpoint, split_checkpoint_path

    checkpoint = None
    if path.endswith(".params"):
        sym, args, _ = load_checkpoint(path)
        checkpoint = split_checkpoint_path(path)
        if data_shape is None:
            data_shape = next(
                v for k, v in input_shapes(sym, args, None).items() if not k.endswith("label")
            )
    else:
        try:
            sym = mx.sym.load(path)
        except mx.base.MXNetError as exc:
            raise ConversionError(f"invalid symbol file {path}") from exc
        if data_shape is None:
            raise ConversionError("--data-shape is needed with a symbol file")
    # The measured-latency column comes from binmx_runtime when it is installed.
    print(binmx.summary(sym, tuple(data_shape), checkpoint=checkpoint).table())
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from binmx.converter import ConversionError, ConversionReport, convert_checkpoint

    try:
        if args.summary:
            return _print_summary(args.params, args.data_shape)
        report = ConversionReport()
        json_path, params_path = convert_checkpoint(
            args.params,
            output_dir=args.output_dir,
            verify_outputs=not args.no_verify,
            data_shape=args.data_shape,
            report=report,
            fold=args.fold,
        )
    except ConversionError as exc:
        print(f"model_converter: error: {_one_line(str(exc))}", file=sys.stderr)
        return 1
    except OSError as exc:  # reading the inputs (a directory, a permission)
        where = f" {exc.filename}" if exc.filename else ""
        print(f"model_converter: error: cannot read{where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except MemoryError:
        print("model_converter: error: out of memory", file=sys.stderr)
        return 1
    except Exception as exc:  # a case the converter does not name yet: still one line
        print(
            f"model_converter: error: unexpected {type(exc).__name__}: {_one_line(str(exc))}",
            file=sys.stderr,
        )
        return 1
    before = os.path.getsize(args.params)
    after = os.path.getsize(params_path)
    print(f"converted {len(report.converted)} layer(s): {', '.join(report.converted)}")
    by_bits: dict[int, list[str]] = {}
    for name in report.converted:
        by_bits.setdefault(report.weight_bits[name], []).append(name)
    print(
        "weights packed at "
        + "; ".join(
            f"{b} bit{'s' if b > 1 else ''}: {', '.join(names)}"
            for b, names in sorted(by_bits.items())
        )
    )
    print(
        f"parameters: {report.bytes_before:,} -> {report.bytes_after:,} bytes "
        f"({report.ratio:.1f}x); file {before:,} -> {after:,} bytes ({before / after:.1f}x)"
    )
    if report.max_abs_diff is not None:
        print(f"verified: outputs equal (max abs difference {report.max_abs_diff:.3g})")
    else:
        print("not verified (--no-verify)")
    print(f"wrote {json_path}")
    print(f"wrote {params_path}")
    return 0


def summary_main(argv: list[str] | None = None) -> int:
    """``binmx-summary FILE --data-shape ...``: same as ``model_converter --summary``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return main(["--summary", *argv])


if __name__ == "__main__":
    sys.exit(main())
