"""Model converter: pack the quantised weights of a trained model into uint64 words.

Every ``QConvolution`` / ``QFullyConnected`` node with ``weight_bit`` in 1..8 (and not yet
converted) gets ``binarized_weights_only=True``; its weight input is replaced by the packed
int64 array of docs/design.md §2 (uint64 bit patterns):

- ``act_bit = weight_bit = 1``: sign words, bit 1 = -1, channel ``c`` of a tap in word
  ``c // 64``, bit ``c % 64``: QConvolution ``W[F, C/g, kh, kw]`` ->
  ``int64[F, kh, kw, ceil(C/g/64)]``, QFullyConnected ``W[H, D]`` -> ``int64[H, ceil(D/64)]``;
- any other layer with ``weight_bit = k`` in 1..8: the weight levels
  ``lw = rint(B (tanh W / (2 max|tanh W|) + 1/2))`` (``B = 2^k - 1``; ``W >= 0`` for k = 1) of
  the whole tensor, in the float weight's order, ``k`` bits each in one LSB-first stream
  ``int64[ceil(n k / 64)]`` (:func:`binmx.pack_weight`): ``2 lw / B - 1`` is the layer's
  fake-quantised weight, so the converted layer computes exactly what it did;
- with ``scaling_factor=True`` a float32 input ``alpha[F] = mean |W_f|`` (of the float weights,
  summed in order in float64 as the operators do) is added after the weight (and bias), as the
  operator expects in its packed form.

Weights wider than 8 bits (``weight_bit`` 9..32) stay float: no integer kernel takes them, and
at 9..31 bits the levels would still take 28%..97% of the float bytes.
Layers are found through the graph's own nodes and input edges (never by name substrings).
Everything else -- float layers, BatchNorm, biases, aux states -- is carried over unchanged.
Only the command-line front end (``binmx.converter_cli``) writes files, through
:func:`convert_checkpoint`: every output to a temporary file in the target directory, fsynced
and read back, then all renamed into place; any failure leaves no new file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any

import mxnet as mx
import numpy as np

from binmx._graph import (
    BINARY_OPS,
    INT64_DTYPE_CODE,
    ConversionError,
    Graph,
    bits,
    bool_attr,
    check_graph_json,
    first_line,
    input_shapes,
    random_inputs,
    run_model,
    without_subgraph_fusion,
)
from binmx.fold import fold as fold_bn

__all__ = [
    "BINARY_OPS",
    "ConversionError",
    "ConversionReport",
    "convert",
    "convert_checkpoint",
    "load_checkpoint",
    "run_model",
    "split_checkpoint_path",
    "verify",
    "without_subgraph_fusion",
]


@dataclass
class ConversionReport:
    """What a conversion did (printed by the command-line tool): the converted layers in
    symbol order, and the bits each weight is packed at."""

    converted: list[str] = field(default_factory=list)
    weight_bits: dict[str, int] = field(default_factory=dict)
    bytes_before: int = 0
    bytes_after: int = 0
    max_abs_diff: float | None = None

    @property
    def ratio(self) -> float:
        return self.bytes_before / self.bytes_after if self.bytes_after else float("nan")


def split_checkpoint_path(path: str) -> tuple[str, int]:
    """``dir/prefix-0001.params`` -> (``dir/prefix``, 1); ConversionError without ``-EPOCH``."""
    base = os.path.basename(path)
    match = re.fullmatch(r"(.+)-(\d+)\.params", base)
    if match is None:
        raise ConversionError(f"expected a checkpoint file named PREFIX-EPOCH.params, got {base!r}")
    return os.path.join(os.path.dirname(path), match.group(1)), int(match.group(2))


def load_checkpoint(
    params_path: str,
) -> tuple[mx.sym.Symbol, dict[str, mx.nd.NDArray], dict[str, mx.nd.NDArray]]:
    """Read ``PREFIX-EPOCH.params`` and ``PREFIX-symbol.json`` beside it, with clear errors."""
    prefix, _ = split_checkpoint_path(params_path)
    if os.path.isdir(params_path):
        raise ConversionError(f"params file {params_path} is a directory")
    if not os.path.isfile(params_path):
        raise ConversionError(f"params file not found: {params_path}")
    if os.path.getsize(params_path) == 0:
        raise ConversionError(f"params file is empty: {params_path}")
    json_path = prefix + "-symbol.json"
    if os.path.isdir(json_path):
        raise ConversionError(f"symbol file {json_path} is a directory")
    if not os.path.isfile(json_path):
        raise ConversionError(f"symbol file not found: {json_path}")
    try:
        with open(json_path, encoding="utf-8") as f:
            text = f.read()
        check_graph_json(json.loads(text))
        sym = mx.sym.load_json(text)
    except (ValueError, mx.base.MXNetError, UnicodeDecodeError) as exc:
        raise ConversionError(f"invalid symbol file {json_path}: {first_line(exc)}") from exc
    try:
        saved = mx.nd.load(params_path)
    except (mx.base.MXNetError, ValueError, OSError) as exc:
        raise ConversionError(
            f"cannot read params file {params_path} (truncated or corrupt?): {first_line(exc)}"
        ) from exc
    if not isinstance(saved, dict) or not saved:
        raise ConversionError(f"params file {params_path} holds no named arrays")
    arg_params: dict[str, mx.nd.NDArray] = {}
    aux_params: dict[str, mx.nd.NDArray] = {}
    for key, value in saved.items():
        kind, _, name = key.partition(":")
        if kind == "arg" and name:
            arg_params[name] = value
        elif kind == "aux" and name:
            aux_params[name] = value
        else:
            raise ConversionError(
                f"params file {params_path} has key {key!r}; expected 'arg:NAME' or 'aux:NAME'"
            )
    return sym, arg_params, aux_params


def _nbytes(params: dict[str, mx.nd.NDArray]) -> int:
    return int(sum(v.size * np.dtype(v.dtype).itemsize for v in params.values()))


def _check_matches(
    sym: mx.sym.Symbol, arg_params: dict[str, Any], aux_params: dict[str, Any]
) -> None:
    args = set(sym.list_arguments())
    auxs = set(sym.list_auxiliary_states())
    extra = sorted(set(arg_params) - args)
    if extra:
        raise ConversionError(f"params do not match the symbol: unknown arguments {extra[:5]}")
    extra = sorted(set(aux_params) - auxs)
    if extra:
        raise ConversionError(f"params do not match the symbol: unknown aux states {extra[:5]}")
    missing = sorted(auxs - set(aux_params))
    if missing:
        raise ConversionError(f"params do not match the symbol: missing aux states {missing[:5]}")


def _pack(
    weight: np.ndarray, op: str, node_name: str, weight_name: str, act_bit: int, weight_bit: int
) -> np.ndarray:
    from binmx import pack_weight  # the operators' own packer (the format is theirs)

    rank = 4 if op == "QConvolution" else 2
    if weight.ndim != rank:
        raise ConversionError(
            f"layer {node_name!r}: {op} weight {weight_name!r} must have rank {rank}, "
            f"got shape {weight.shape}"
        )
    return np.asarray(pack_weight(weight, act_bit=act_bit, weight_bit=weight_bit))


def _alpha(weight: np.ndarray) -> np.ndarray:
    """alpha_f = mean |W_f| over everything but the output axis (XNOR-Net), as float32: the
    operators' own sum (float64, in order, then one division and one rounding), so a packed
    layer's stored alpha is the one its float weights gave."""
    flat = np.abs(weight.reshape(weight.shape[0], -1).astype(np.float64))
    if flat.shape[1] == 0:
        return np.full(flat.shape[0], np.nan, np.float32)
    total = np.cumsum(flat, axis=1)[:, -1]  # cumsum adds in order (sum() adds pairwise)
    return (total / flat.shape[1]).astype(np.float32)


def convert(
    sym: mx.sym.Symbol,
    arg_params: dict[str, mx.nd.NDArray],
    aux_params: dict[str, mx.nd.NDArray],
    *,
    fold: bool = False,
) -> tuple[mx.sym.Symbol, dict[str, mx.nd.NDArray], dict[str, mx.nd.NDArray]]:
    """Return ``(sym, arg_params, aux_params)`` with every Q layer's weight of 1..8 bits packed.

    With ``fold=True`` the BatchNorm layers around the binary layers are then folded into
    them for fast inference (:func:`binmx.fold.fold`); by default every other layer is carried
    over unchanged. The inputs are not modified. Raises :class:`ConversionError` for a model
    that is already converted, a Q layer without its weight, NaN/Inf in a weight to pack, or
    params that do not match the symbol.
    """
    new_sym, new_args, new_aux, _ = _convert(sym, arg_params, aux_params)
    if fold:
        new_sym, new_args, new_aux = fold_bn(new_sym, new_args, new_aux)
    return new_sym, new_args, new_aux


def _convert(
    sym: mx.sym.Symbol,
    arg_params: dict[str, mx.nd.NDArray],
    aux_params: dict[str, mx.nd.NDArray],
) -> tuple[mx.sym.Symbol, dict[str, mx.nd.NDArray], dict[str, mx.nd.NDArray], ConversionReport]:
    _check_matches(sym, arg_params, aux_params)
    graph = Graph.from_symbol(sym)
    graph.reserve(arg_params)
    report = ConversionReport(bytes_before=_nbytes(arg_params) + _nbytes(aux_params))
    new_args = dict(arg_params)
    for nid in sorted(graph.nodes):  # the symbol's node order; new variables come last
        node = graph.nodes[nid]
        if node["op"] not in BINARY_OPS:
            continue
        attrs = node.setdefault("attrs", {})
        try:
            if bool_attr(attrs, "binarized_weights_only"):
                raise ConversionError(
                    f"model is already converted: layer {node['name']!r} has "
                    "binarized_weights_only=True"
                )
            act_bit, weight_bit = bits(attrs)
        except ValueError as exc:
            raise ConversionError(str(exc)) from exc
        if 1 <= act_bit <= 32 and 1 <= weight_bit <= 8:
            _convert_node(graph, nid, new_args, report, act_bit, weight_bit)
    new_sym = graph.to_symbol()
    new_aux = dict(aux_params)
    report.bytes_after = _nbytes(new_args) + _nbytes(new_aux)
    return new_sym, new_args, new_aux, report


def _convert_node(
    graph: Graph,
    nid: int,
    new_args: dict[str, mx.nd.NDArray],
    report: ConversionReport,
    act_bit: int,
    weight_bit: int,
) -> None:
    node = graph.nodes[nid]
    name = node["name"]
    attrs = node["attrs"]
    if len(node["inputs"]) < 2:
        raise ConversionError(f"layer {name!r} has no weight input")
    try:
        inputs = graph.named_inputs(nid)
    except ValueError as exc:
        raise ConversionError(str(exc)) from exc
    weight_node = graph.nodes[inputs["weight"][0]]
    weight_name = weight_node["name"]
    if weight_node["op"] != "null":
        raise ConversionError(
            f"layer {name!r}: weight input {weight_name!r} is computed, not a parameter"
        )
    if weight_name not in new_args:
        raise ConversionError(f"layer {name!r}: weight {weight_name!r} is missing from params")
    weight = new_args[weight_name].asnumpy()
    if weight.dtype != np.float32:
        raise ConversionError(
            f"layer {name!r}: weight {weight_name!r} has dtype {weight.dtype}, expected float32"
        )
    if not np.all(np.isfinite(weight)):
        bad = int(np.size(weight) - np.count_nonzero(np.isfinite(weight)))
        raise ConversionError(
            f"layer {name!r}: weight {weight_name!r} holds {bad} NaN/Inf value(s)"
        )
    packed = _pack(weight, node["op"], name, weight_name, act_bit, weight_bit)
    new_args[weight_name] = mx.nd.array(packed, dtype=np.int64)
    wattrs = weight_node.setdefault("attrs", {})
    wattrs["__dtype__"] = INT64_DTYPE_CODE
    wattrs["__shape__"] = str(tuple(packed.shape))
    wattrs.pop("__init__", None)
    attrs["binarized_weights_only"] = "True"

    if bool_attr(attrs, "scaling_factor"):
        alpha = _alpha(weight)
        alpha_id = graph.add_variable(f"{name}_alpha", alpha.shape)
        inputs["alpha"] = [alpha_id, 0, 0]
        new_args[graph.nodes[alpha_id]["name"]] = mx.nd.array(alpha, dtype=np.float32)
    graph.set_named_inputs(nid, inputs)
    report.converted.append(name)
    report.weight_bits[name] = weight_bit


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _os_error_text(exc: OSError) -> str:
    """``No space left on device`` / ``Is a directory`` / ...: the cause, without paths."""
    return exc.strerror or str(exc)


def _params_bytes(to_save: dict[str, mx.nd.NDArray]) -> bytes:
    """``mx.nd.save`` into memory (a memfd; a private temporary file elsewhere), then the bytes.

    The converter writes these bytes itself: MXNet's file stream reports a failed write (a full
    disk) as a multi-line error, or, for a symbol file, not at all.
    """
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("binmx-params")
        try:
            mx.nd.save(f"/proc/self/fd/{fd}", to_save)
            size = os.fstat(fd).st_size
            return os.pread(fd, size, 0)
        finally:
            os.close(fd)
    fd, tmp = tempfile.mkstemp(prefix="binmx-params-", suffix=".params")
    os.close(fd)
    try:
        mx.nd.save(tmp, to_save)
        with open(tmp, "rb") as f:
            return f.read()
    finally:
        os.unlink(tmp)


def _write_fsync(path: str, data: bytes) -> None:
    """Write ``data`` to the new file ``path``, flush it to the device (fsync), read it back."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 & ~_umask())
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    with open(path, "rb") as f:
        if f.read() != data:
            raise ConversionError(f"cannot write {path}: the file read back differs")


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all_atomic(outputs: dict[str, bytes]) -> None:
    """Write every ``path -> bytes`` so that either all are in place or none changed.

    Each output goes to a temporary file in its target directory (written, fsynced, read back
    and compared), then all are renamed into place. A target that already exists is kept as a
    hard link until every rename has succeeded, so a failure part-way restores it. Any failure
    removes every temporary file and raises :class:`ConversionError` with one line naming the
    file and the cause (``No space left on device``, ``Is a directory``, ...).
    """
    for path in outputs:
        if os.path.isdir(path):
            raise ConversionError(f"cannot write {path}: it is a directory")
        if os.path.lexists(path) and not os.path.isfile(path):
            raise ConversionError(f"cannot write {path}: it exists and is not a regular file")
    temps: dict[str, str] = {}
    backups: dict[str, str] = {}
    placed: list[str] = []
    current = ""
    try:
        for path, data in outputs.items():
            current = path
            directory = os.path.dirname(os.path.abspath(path))
            tmp = os.path.join(
                directory, f".binmx-{os.getpid()}-{len(temps)}-{os.urandom(4).hex()}.tmp"
            )
            temps[path] = tmp
            _write_fsync(tmp, data)
        for path in outputs:
            current = path
            if os.path.lexists(path):
                backup = temps[path] + ".old"
                try:
                    os.link(path, backup)
                except OSError:  # a file system without hard links: a copy
                    shutil.copy2(path, backup)
                backups[path] = backup
        for path, tmp in temps.items():
            current = path
            os.replace(tmp, path)
            placed.append(path)
        for directory in {os.path.dirname(os.path.abspath(p)) for p in outputs}:
            _fsync_dir(directory)
    except OSError as exc:
        _roll_back(placed, backups)
        raise ConversionError(f"cannot write {current}: {_os_error_text(exc)}") from exc
    except BaseException:
        _roll_back(placed, backups)
        raise
    finally:
        for tmp in [*temps.values(), *backups.values()]:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _roll_back(placed: list[str], backups: dict[str, str]) -> None:
    """Undo the renames done so far: restore replaced files, remove new ones."""
    for path in placed:
        with contextlib.suppress(OSError):
            if path in backups:
                os.replace(backups.pop(path), path)
            else:
                os.unlink(path)


def verify(
    sym: mx.sym.Symbol,
    arg_params: dict[str, mx.nd.NDArray],
    aux_params: dict[str, mx.nd.NDArray],
    new_sym: mx.sym.Symbol,
    new_args: dict[str, mx.nd.NDArray],
    new_aux: dict[str, mx.nd.NDArray],
    *,
    data_shape: tuple[int, ...] | None = None,
    seed: int = 0,
    rtol: float = 0.0,
) -> float:
    """Run both models on one random batch; ConversionError if the outputs differ by more than
    ``rtol * (1 + max|output|)``.

    Packing changes no value a layer computes with: the sign words and the k-bit levels give
    the very quantised weights the float ones did, and ``alpha`` is the operators' own sum, so
    by default (``rtol=0``) the outputs must be equal. Returns the largest absolute difference.
    """
    inputs = random_inputs(input_shapes(sym, arg_params, data_shape), seed=seed)
    try:
        before = run_model(sym, arg_params, aux_params, inputs)
        after = run_model(new_sym, new_args, new_aux, inputs)
    except mx.base.MXNetError as exc:
        raise ConversionError(f"verification run failed: {first_line(exc)}") from exc
    worst = 0.0
    for i, (a, b) in enumerate(zip(before, after, strict=True)):
        if a.shape != b.shape:
            raise ConversionError(f"verification failed: output {i} shape {a.shape} != {b.shape}")
        diff = float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0
        worst = max(worst, diff)
        tol = rtol * (1.0 + float(np.max(np.abs(a)))) if a.size else 0.0
        if not np.isfinite(diff) or diff > tol:
            raise ConversionError(
                f"verification failed: output {i} differs by up to {diff:.3g} after conversion"
            )
    return worst


def convert_checkpoint(
    path: str,
    *,
    output_dir: str | None = None,
    verify_outputs: bool = True,
    data_shape: tuple[int, ...] | None = None,
    report: ConversionReport | None = None,
    fold: bool = False,
) -> tuple[str, str]:
    """Convert ``PREFIX-EPOCH.params`` (+ ``PREFIX-symbol.json``); return the written paths.

    Writes ``binarized_PREFIX-symbol.json`` and ``binarized_PREFIX-EPOCH.params`` beside the
    input (or into ``output_dir``), atomically. Nothing is written when anything fails.
    ``fold=True`` also folds BatchNorm into the binary layers (:func:`binmx.fold.fold`); the
    verification then allows float-rounding differences (BatchNorm computed as one affine).
    """
    prefix, _ = split_checkpoint_path(path)
    epoch = os.path.basename(path)[len(os.path.basename(prefix)) + 1 : -len(".params")]
    sym, arg_params, aux_params = load_checkpoint(path)
    new_sym, new_args, new_aux, rep = _convert(sym, arg_params, aux_params)
    if not rep.converted:
        raise ConversionError("no QConvolution/QFullyConnected layer with weight_bit <= 8 to pack")
    if fold:
        try:
            new_sym, new_args, new_aux = fold_bn(new_sym, new_args, new_aux, data_shape=data_shape)
        except mx.base.MXNetError as exc:
            raise ConversionError(f"folding failed: {first_line(exc)}") from exc
        rep.bytes_after = _nbytes(new_args) + _nbytes(new_aux)
    if verify_outputs:
        # Folded BatchNorm is one affine map instead of MXNet's normalise-then-scale: float
        # rounding differs (1e-4 relative covers it through a few layers).
        rep.max_abs_diff = verify(
            sym,
            arg_params,
            aux_params,
            new_sym,
            new_args,
            new_aux,
            data_shape=data_shape,
            rtol=1e-4 if fold else 0.0,
        )
    out_dir = output_dir if output_dir is not None else os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(out_dir):
        raise ConversionError(f"output directory does not exist: {out_dir}")
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise ConversionError(f"output directory is not writable: {out_dir}")
    base = os.path.basename(prefix)
    json_path = os.path.join(out_dir, f"binarized_{base}-symbol.json")
    params_path = os.path.join(out_dir, f"binarized_{base}-{epoch}.params")
    to_save = {f"arg:{k}": v for k, v in new_args.items()}
    to_save.update({f"aux:{k}": v for k, v in new_aux.items()})
    try:
        params_bytes = _params_bytes(to_save)
    except (OSError, mx.base.MXNetError) as exc:
        raise ConversionError(f"cannot serialise the parameters: {first_line(exc)}") from exc
    json_bytes = new_sym.tojson().encode("utf-8")
    _write_all_atomic({params_path: params_bytes, json_path: json_bytes})
    if report is not None:
        report.__dict__.update(rep.__dict__)
    return json_path, params_path
