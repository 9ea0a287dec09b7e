"""Model converter: pack the binary weights of a trained model into 1-bit uint64 words.

Every ``QConvolution`` / ``QFullyConnected`` node with ``act_bit = weight_bit = 1`` (and not
yet converted) gets ``binarized_weights_only=True``; its weight input is replaced by the
packed int64 array of docs/design.md §2 (uint64 bit patterns, bit 1 = -1, channel ``c`` of a tap in
word ``c // 64``, bit ``c % 64``):

- QConvolution: float ``W[F, C/g, kh, kw]`` -> ``int64[F, kh, kw, ceil(C/g/64)]``;
- QFullyConnected: float ``W[H, D]`` -> ``int64[H, ceil(D/64)]``;
- with ``scaling_factor=True`` a float32 input ``alpha[F] = mean |W_f|`` is added after the
  weight (and bias), as the operator expects in its packed form.

Layers are found through the graph's own nodes and input edges (never by name substrings).
Everything else -- float layers, BatchNorm, biases, aux states, k-bit Q layers -- is carried
over unchanged. Only the command-line front end (``binmx.converter_cli``) writes files,
through :func:`convert_checkpoint`: every output to a temporary file in the target directory,
fsynced and read back, then all renamed into place; any failure leaves no new file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import mxnet as mx
import numpy as np

from binmx._quiet import filtered_stderr

__all__ = [
    "ConversionError",
    "ConversionReport",
    "convert",
    "convert_checkpoint",
    "load_checkpoint",
    "split_checkpoint_path",
    "without_subgraph_fusion",
]

BINARY_OPS = ("QConvolution", "QFullyConnected")
_INT64_DTYPE_CODE = "6"  # mshadow::kInt64, as MXNet writes it in __dtype__
_TRUE = ("true", "1")


class ConversionError(Exception):
    """A model cannot be converted; the message is one line saying why."""


@dataclass
class ConversionReport:
    """What a conversion did (printed by the command-line tool)."""

    converted: list[str] = field(default_factory=list)
    bytes_before: int = 0
    bytes_after: int = 0
    max_abs_diff: float | None = None

    @property
    def ratio(self) -> float:
        return self.bytes_before / self.bytes_after if self.bytes_after else float("nan")


def _is_true(value: str | None) -> bool:
    return value is not None and str(value).strip().lower() in _TRUE


def _int_attr(attrs: dict[str, str], key: str, default: int) -> int:
    value = attrs.get(key)
    if value is None:
        return default
    try:
        return int(str(value).strip())
    except ValueError as exc:
        raise ConversionError(f"attribute {key}={value!r} is not an integer") from exc


def _bits(attrs: dict[str, str]) -> tuple[int, int]:
    act_bit = _int_attr(attrs, "act_bit", 1)
    return act_bit, _int_attr(attrs, "weight_bit", act_bit)


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
        _check_graph(json.loads(text))
        sym = mx.sym.load_json(text)
    except (ValueError, mx.base.MXNetError, UnicodeDecodeError) as exc:
        raise ConversionError(f"invalid symbol file {json_path}: {_first_line(exc)}") from exc
    try:
        saved = mx.nd.load(params_path)
    except (mx.base.MXNetError, ValueError, OSError) as exc:
        raise ConversionError(
            f"cannot read params file {params_path} (truncated or corrupt?): {_first_line(exc)}"
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


def _check_graph(graph: object) -> None:
    """The structure MXNet's symbol JSON must have, checked before MXNet or the converter reads
    it (ValueError naming what is wrong): an object with a list of nodes, each with a string
    ``op`` and ``name`` and ``inputs`` [node, output, version] referring to an earlier node;
    ``heads`` referring to nodes."""
    if not isinstance(graph, dict):
        raise ValueError(f"expected a JSON object with `nodes`, got {type(graph).__name__}")
    nodes = graph.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        raise ValueError("expected `nodes` to be a non-empty list")
    for i, node in enumerate(nodes):
        if not isinstance(node, dict):
            raise ValueError(f"node {i} is not an object")
        if not isinstance(node.get("op"), str) or not isinstance(node.get("name"), str):
            raise ValueError(f"node {i} needs string `op` and `name`")
        if not isinstance(node.get("attrs", {}), dict):
            raise ValueError(f"node {i} ({node['name']!r}): `attrs` is not an object")
        inputs = node.get("inputs", [])
        if not isinstance(inputs, list):
            raise ValueError(f"node {i} ({node['name']!r}): `inputs` is not a list")
        for entry in inputs:
            if (
                not isinstance(entry, list)
                or len(entry) not in (2, 3)
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in entry)
                or not 0 <= entry[0] < i
                or entry[1] < 0
            ):
                raise ValueError(
                    f"node {i} ({node['name']!r}): input {entry!r} does not refer to an "
                    "earlier node"
                )
    heads = graph.get("heads")
    if not isinstance(heads, list) or not heads:
        raise ValueError("expected `heads` to be a non-empty list")
    for entry in heads:
        if (
            not isinstance(entry, list)
            or len(entry) not in (2, 3)
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in entry)
            or not 0 <= entry[0] < len(nodes)
        ):
            raise ValueError(f"head {entry!r} does not refer to a node")


# lib_api's "Extension Traceback" line prefix: "[0] /path/to/q_convolution.cc[299]: ".
_EXT_PREFIX = re.compile(r"^\[\d+\] \S+\[\d+\]: ")


def _first_line(exc: BaseException) -> str:
    """The useful line of an error (MXNetError texts end with it), short, without the
    extension library's source-location prefix."""
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if not ln.startswith(("Stack trace", "[bt]", "File ")):
            return _EXT_PREFIX.sub("", ln)[:400]
    return text[:400]


def _nbytes(params: dict[str, mx.nd.NDArray]) -> int:
    return int(sum(v.size * np.dtype(v.dtype).itemsize for v in params.values()))


def _graph_inputs(node: dict[str, Any], nodes: list[dict[str, Any]]) -> list[str]:
    return [nodes[entry[0]]["name"] for entry in node["inputs"]]


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


def _pack(weight: np.ndarray, op: str, node_name: str, weight_name: str) -> np.ndarray:
    from binmx import pack_weight  # the operators' own packer (the format is theirs)

    rank = 4 if op == "QConvolution" else 2
    if weight.ndim != rank:
        raise ConversionError(
            f"layer {node_name!r}: {op} weight {weight_name!r} must have rank {rank}, "
            f"got shape {weight.shape}"
        )
    return np.asarray(pack_weight(weight))


def _alpha(weight: np.ndarray) -> np.ndarray:
    """alpha_f = mean |W_f| over everything but the output axis (XNOR-Net), as float32."""
    flat = np.abs(weight.reshape(weight.shape[0], -1).astype(np.float64))
    return (flat.sum(axis=1) / flat.shape[1]).astype(np.float32)


def convert(
    sym: mx.sym.Symbol,
    arg_params: dict[str, mx.nd.NDArray],
    aux_params: dict[str, mx.nd.NDArray],
    *,
    fold: bool = False,
) -> tuple[mx.sym.Symbol, dict[str, mx.nd.NDArray], dict[str, mx.nd.NDArray]]:
    """Return ``(sym, arg_params, aux_params)`` with every 1-bit Q layer's weight packed.

    With ``fold=True`` the BatchNorm layers around the binary layers are then folded into
    them for fast inference (:func:`binmx.fold.fold`); by default every other layer is carried
    over unchanged. The inputs are not modified. Raises :class:`ConversionError` for a model
    that is already converted, a Q layer without its weight, NaN/Inf in a weight to pack, or
    params that do not match the symbol.
    """
    new_sym, new_args, new_aux, _ = _convert(sym, arg_params, aux_params)
    if fold:
        from binmx.fold import fold as fold_bn

        new_sym, new_args, new_aux = fold_bn(new_sym, new_args, new_aux)
    return new_sym, new_args, new_aux


def _convert(
    sym: mx.sym.Symbol,
    arg_params: dict[str, mx.nd.NDArray],
    aux_params: dict[str, mx.nd.NDArray],
) -> tuple[mx.sym.Symbol, dict[str, mx.nd.NDArray], dict[str, mx.nd.NDArray], ConversionReport]:
    _check_matches(sym, arg_params, aux_params)
    graph = json.loads(sym.tojson())
    nodes: list[dict[str, Any]] = graph["nodes"]
    report = ConversionReport(bytes_before=_nbytes(arg_params) + _nbytes(aux_params))
    new_args = dict(arg_params)

    new_nodes: list[dict[str, Any]] = []
    remap: dict[int, int] = {}
    taken = {n["name"] for n in nodes}
    for old_id, node in enumerate(nodes):
        node = json.loads(json.dumps(node))  # deep copy
        node["inputs"] = [[remap[e[0]], e[1], e[2]] for e in node["inputs"]]
        attrs = node.get("attrs", {})
        if node["op"] in BINARY_OPS:
            if _is_true(attrs.get("binarized_weights_only")):
                raise ConversionError(
                    f"model is already converted: layer {node['name']!r} has "
                    "binarized_weights_only=True"
                )
            if _bits(attrs) == (1, 1):
                _convert_node(node, new_nodes, nodes, old_id, new_args, taken, report)
        remap[old_id] = len(new_nodes)
        new_nodes.append(node)

    graph["nodes"] = new_nodes
    graph["arg_nodes"] = [i for i, n in enumerate(new_nodes) if n["op"] == "null"]
    graph["heads"] = [[remap[h[0]], h[1], h[2]] for h in graph["heads"]]
    # node_row_ptr: prefix sums of output counts; variables have one output. Recomputing it
    # needs each op's output count, so let MXNet rebuild it from the remaining fields.
    graph.pop("node_row_ptr", None)
    new_sym = mx.sym.load_json(json.dumps(graph))
    new_aux = dict(aux_params)
    report.bytes_after = _nbytes(new_args) + _nbytes(new_aux)
    return new_sym, new_args, new_aux, report


def _convert_node(
    node: dict[str, Any],
    new_nodes: list[dict[str, Any]],
    old_nodes: list[dict[str, Any]],
    old_id: int,
    new_args: dict[str, mx.nd.NDArray],
    taken: set[str],
    report: ConversionReport,
) -> None:
    name = node["name"]
    attrs = node.setdefault("attrs", {})
    inputs = _graph_inputs(old_nodes[old_id], old_nodes)
    if len(inputs) < 2:
        raise ConversionError(f"layer {name!r} has no weight input")
    weight_name = inputs[1]
    weight_node = new_nodes[node["inputs"][1][0]]
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
    packed = _pack(weight, node["op"], name, weight_name)
    new_args[weight_name] = mx.nd.array(packed, dtype=np.int64)
    wattrs = weight_node.setdefault("attrs", {})
    wattrs["__dtype__"] = _INT64_DTYPE_CODE
    wattrs["__shape__"] = str(tuple(packed.shape))
    wattrs.pop("__init__", None)
    attrs["binarized_weights_only"] = "True"

    if _is_true(attrs.get("scaling_factor")):
        alpha_name = f"{name}_alpha"
        while alpha_name in taken or alpha_name in new_args:
            alpha_name += "_"
        taken.add(alpha_name)
        alpha = _alpha(weight)
        new_nodes.append(
            {
                "op": "null",
                "name": alpha_name,
                "attrs": {"__dtype__": "0", "__shape__": str(tuple(alpha.shape))},
                "inputs": [],
            }
        )
        node["inputs"].append([len(new_nodes) - 1, 0, 0])
        new_args[alpha_name] = mx.nd.array(alpha, dtype=np.float32)
    report.converted.append(name)


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


def _random_inputs(
    sym: mx.sym.Symbol, params: dict[str, mx.nd.NDArray], data_shape: tuple[int, ...] | None
) -> dict[str, tuple[int, ...]]:
    """Shapes of the non-parameter inputs; inferred from the graph when not given."""
    free = [a for a in sym.list_arguments() if a not in params]
    labels = [a for a in free if a.endswith("label")]
    data = [a for a in free if a not in labels]
    if len(data) != 1:
        raise ConversionError(
            f"cannot tell the data input among {data}; the model must have exactly one"
        )
    _check_layers(sym)
    if data_shape is not None:
        candidates = [tuple(data_shape)]
    else:
        candidates = _candidate_shapes(sym, params, data[0])
    args = set(sym.list_arguments())
    # Every parameter's shape is given, so no operator sees an input of unknown rank (MXNet
    # 1.9.1's extension-operator shape inference mis-sizes a buffer for one) and a data shape
    # that does not fit the parameters fails inference.
    known = {k: tuple(v.shape) for k, v in params.items() if k in args}
    for shape in candidates:
        shapes = {data[0]: shape}
        try:
            arg_shapes, out_shapes, _ = sym.infer_shape_partial(**shapes, **known)
        except mx.base.MXNetError:
            continue
        if arg_shapes is None or not out_shapes or any(not s or min(s) <= 0 for s in out_shapes):
            continue
        table = dict(zip(sym.list_arguments(), arg_shapes, strict=True))
        if all(tuple(table[k]) == tuple(v) for k, v in known.items()):
            for lab in labels:
                shapes[lab] = tuple(table[lab])
            return shapes
    _explain_mismatch(sym, params, data[0], candidates, given=data_shape is not None)
    if data_shape is not None:
        raise ConversionError(
            f"--data-shape {tuple(data_shape)} does not fit the model's parameters"
        )
    raise ConversionError(
        "cannot infer the data shape from the graph; give it with --data-shape N,C,H,W"
    )


def _explain_mismatch(
    sym: mx.sym.Symbol,
    params: dict[str, mx.nd.NDArray],
    data: str,
    candidates: list[tuple[int, ...]],
    *,
    given: bool,
) -> None:
    """ConversionError naming a parameter whose shape the symbol contradicts, for the data
    shape (of ``candidates``) that leaves the fewest such parameters (parameters given by rank
    only, -1 = unknown dims), or the inference error of the first data shape."""
    args = sym.list_arguments()
    ranks = {k: (-1,) * v.ndim for k, v in params.items() if k in args}
    best: tuple[int, str] | None = None
    first_error: str | None = None
    for shape in candidates:
        what = f"--data-shape {shape}" if given else f"data shape {shape}"
        try:
            arg_shapes, _, _ = sym.infer_shape_partial(**{data: shape}, **ranks)
        except mx.base.MXNetError as exc:
            if first_error is None:
                first_error = f"{what}: {_first_line(exc)}"
            continue
        wrong = []
        for name, inferred in zip(args, arg_shapes or [], strict=False):
            if name not in params or not inferred or any(d <= 0 for d in inferred):
                continue
            have = tuple(params[name].shape)
            if tuple(inferred) != have:
                wrong.append(
                    f"parameter {name!r} has shape {have}, but the symbol gives it "
                    f"{tuple(inferred)} for {what}"
                )
        if wrong and (best is None or len(wrong) < best[0]):
            best = (len(wrong), wrong[0])
            if len(wrong) == 1:
                break
    if best is not None:
        raise ConversionError(best[1])
    if first_error is not None:
        hint = "" if given else "; give the data shape with --data-shape N,C,H,W"
        raise ConversionError(f"cannot infer the model's shapes: {first_error}{hint}")


def _check_layers(sym: mx.sym.Symbol) -> None:
    """Each binmx layer's attributes, checked alone (its inputs of known rank, unknown size):
    a crafted attribute (a kernel of 2^58, a dilation of 2^62) is named here, before any data
    shape is tried. ConversionError with the operator's own message."""
    from binmx.ops import op_inputs

    graph = json.loads(sym.tojson())
    for node in graph["nodes"]:
        if node["op"] not in BINARY_OPS:
            continue
        attrs = node.get("attrs", {})
        try:
            names = op_inputs(node["op"], attrs)
        except ValueError as exc:
            raise ConversionError(f"layer {node['name']!r}: {exc}") from exc
        conv = node["op"] == "QConvolution"
        rank = {"data": 4 if conv else 2, "weight": 4 if conv else 2, "residual": 4}
        nodes = [
            {
                "op": "null",
                "name": f"in{i}",
                "attrs": {"__shape__": str((-1,) * rank.get(n, 1))},
                "inputs": [],
            }
            for i, n in enumerate(names)
        ]
        nodes.append(
            {
                "op": node["op"],
                "name": node["name"],
                "attrs": attrs,
                "inputs": [[i, 0, 0] for i in range(len(names))],
            }
        )
        mini = {
            "nodes": nodes,
            "arg_nodes": list(range(len(names))),
            "heads": [[len(names), 0, 0]],
            "attrs": graph.get("attrs", {}),
        }
        try:
            mx.sym.load_json(json.dumps(mini)).infer_shape_partial()
        except mx.base.MXNetError as exc:
            raise ConversionError(f"layer {node['name']!r}: {_first_line(exc)}") from exc


def _candidate_shapes(
    sym: mx.sym.Symbol, params: dict[str, mx.nd.NDArray], data: str
) -> list[tuple[int, ...]]:
    graph = json.loads(sym.tojson())
    nodes = graph["nodes"]
    for node in nodes:
        if node["name"] == data and "__shape__" in node.get("attrs", {}):
            shape = tuple(int(s) for s in re.findall(r"-?\d+", node["attrs"]["__shape__"]))
            if shape and all(d > 0 for d in shape[1:]):
                return [(1, *shape[1:])]
    # The first layer that reads the data fixes its channels (conv) or width (fc).
    data_id = next(i for i, n in enumerate(nodes) if n["name"] == data)
    for node in nodes:
        ins = [e[0] for e in node["inputs"]]
        if data_id in ins and len(ins) > 1 and nodes[ins[1]]["name"] in params:
            w = params[nodes[ins[1]]["name"]].shape
            if node["op"] in ("Convolution", "QConvolution") and len(w) == 4:
                groups = _int_attr(node.get("attrs", {}), "num_group", 1)
                c = w[1] * groups
                common = [28, 32, 224, 227, 299, 64, 96, 112, 128, 256]
                sizes = common + [s for s in range(1, 300) if s not in common]
                return [(1, c, s, s) for s in sizes]
            if node["op"] in ("FullyConnected", "QFullyConnected") and len(w) == 2:
                return [(1, w[1])]
    return []


@contextlib.contextmanager
def without_subgraph_fusion() -> Iterator[None]:
    """Bind executors inside this block without MXNet's MKLDNN subgraph pass.

    MXNet 1.9.1's MKLDNN subgraph pass (on by default for inference binds) fuses a Convolution
    with a following BatchNorm even when the convolution's output has other readers, which then
    see the normalised values -- a pre-activation ResNet's conv0 feeds both a BatchNorm and the
    first residual add, so its outputs change. Reference runs (verification, accuracy) bind
    inside this block; the variable is read when an executor is bound. MXNet's line
    "MXNET_SUBGRAPH_BACKEND=NONE is detected" for each bind is kept off stderr
    (binmx._quiet.filtered_stderr); keep the block to the binds.
    """
    saved = os.environ.get("MXNET_SUBGRAPH_BACKEND")
    os.environ["MXNET_SUBGRAPH_BACKEND"] = "NONE"
    try:
        with filtered_stderr():
            yield
    finally:
        if saved is None:
            del os.environ["MXNET_SUBGRAPH_BACKEND"]
        else:
            os.environ["MXNET_SUBGRAPH_BACKEND"] = saved


def run_model(
    sym: mx.sym.Symbol,
    arg_params: dict[str, mx.nd.NDArray],
    aux_params: dict[str, mx.nd.NDArray],
    inputs: dict[str, np.ndarray],
) -> list[np.ndarray]:
    """Forward (inference mode) of a bound executor; returns the outputs as numpy."""
    args = dict(arg_params)
    args.update({k: mx.nd.array(v, dtype=v.dtype) for k, v in inputs.items()})
    with without_subgraph_fusion():
        exe = sym.bind(mx.cpu(), args=args, aux_states=dict(aux_params), grad_req="null")
    exe.forward(is_train=False)
    return [o.asnumpy() for o in exe.outputs]


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
    rtol: float = 1e-5,
) -> float:
    """Run both models on one random batch; ConversionError if the outputs differ.

    The 1-bit forward is integer-exact, so the outputs must be equal; a difference of float
    rounding size is allowed only for the per-filter scale ``alpha`` (summed by NumPy here and
    by the operator on the float path). Returns the largest absolute difference.
    """
    shapes = _random_inputs(sym, arg_params, data_shape)
    rng = np.random.default_rng(seed)
    inputs = {}
    for name, shape in shapes.items():
        if name.endswith("label"):
            inputs[name] = np.zeros(shape, dtype=np.float32)
        else:
            inputs[name] = rng.standard_normal(shape).astype(np.float32)
    try:
        before = run_model(sym, arg_params, aux_params, inputs)
        after = run_model(new_sym, new_args, new_aux, inputs)
    except mx.base.MXNetError as exc:
        raise ConversionError(f"verification run failed: {_first_line(exc)}") from exc
    worst = 0.0
    for i, (a, b) in enumerate(zip(before, after, strict=True)):
        if a.shape != b.shape:
            raise ConversionError(f"verification failed: output {i} shape {a.shape} != {b.shape}")
        diff = float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0
        worst = max(worst, diff)
        # alpha may differ from the operator's own mean |W_f| in the last float bit.
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
        raise ConversionError("no QConvolution/QFullyConnected layer with act_bit=weight_bit=1")
    if fold:
        from binmx.fold import fold as fold_bn

        try:
            new_sym, new_args, new_aux = fold_bn(new_sym, new_args, new_aux, data_shape=data_shape)
        except mx.base.MXNetError as exc:
            raise ConversionError(f"folding failed: {_first_line(exc)}") from exc
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
            rtol=1e-4 if fold else 1e-5,
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
        raise ConversionError(f"cannot serialise the parameters: {_first_line(exc)}") from exc
    json_bytes = new_sym.tojson().encode("utf-8")
    _write_all_atomic({params_path: params_bytes, json_path: json_bytes})
    if report is not None:
        report.__dict__.update(rep.__dict__)
    return json_path, params_path
