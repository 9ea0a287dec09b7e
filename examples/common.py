"""Helpers shared by the binmx examples (train_mnist.py, train_resnet.py).

Training with Module.fit or a Gluon loop, tqdm progress bars, evaluation of saved checkpoints,
conversion with binmx's converter, an inference-speed comparison (median of N forward passes, both
models in the same process and engine), the training-curve PNG and results.json.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import binmx
import mxnet as mx
import numpy as np
from binmx.converter import without_subgraph_fusion

# What the examples need beyond binmx itself (pyproject.toml's `examples` extra).
EXAMPLES_INSTALL = (
    "pip install 'binmx[examples]'  (or: pip install tqdm 'matplotlib>=3.7,<3.9' 'contourpy<1.3')"
)


def _require_example_packages() -> None:
    """Exit with the command to run when tqdm or matplotlib is missing (not a traceback)."""
    missing = []
    for name in ("tqdm", "matplotlib"):
        try:
            __import__(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            missing.append(name)
    if missing:
        raise SystemExit(
            f"The binmx examples need {' and '.join(missing)}, which is not installed. "
            f"Install it with: {EXAMPLES_INSTALL}"
        )


_require_example_packages()
from tqdm import tqdm  # noqa: E402

log = logging.getLogger("binmx.examples")

# MXNet prints "Subgraph backend MKLDNN is activated." at every bind unless this is 0 (read
# once per process, at the first bind).
os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")


def setup_logging() -> None:
    """One voice on the terminal: the examples' own lines (logger binmx.examples) at INFO;
    everything logged through the root logger (Module.fit's "Epoch[0] Train-..." lines,
    "Saved checkpoint", matplotlib's font cache notice) only from WARNING up."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)


# ----------------------------------------------------------------------------------------------
# Distributed set-up
# ----------------------------------------------------------------------------------------------


@dataclass
class KV:
    """The kvstore argument for Module.fit / gluon.Trainer, plus this worker's rank."""

    store: Any
    rank: int
    num_workers: int

    @property
    def distributed(self) -> bool:
        return self.num_workers > 1 or (
            isinstance(self.store, mx.kv.KVStore) and "dist" in self.store.type
        )


def make_kvstore(name: str) -> KV:
    """``local``/``device`` stay strings; ``dist_*`` create the parameter-server client."""
    if name.startswith("dist"):
        if "DMLC_ROLE" not in os.environ:
            raise ValueError(
                f"Expected `--kv-store {name}` to run under a launcher that sets DMLC_ROLE and "
                "friends, e.g. python tools/launch_local.py -n 2 -- python examples/train_mnist.py "
                f"--kv-store {name}"
            )
        kv = mx.kv.create(name)
        return KV(kv, kv.rank, kv.num_workers)
    return KV(name, 0, 1)


# ----------------------------------------------------------------------------------------------
# Progress and history
# ----------------------------------------------------------------------------------------------


@dataclass
class History:
    """Per-epoch curves, written to results.json and the PNG."""

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    learning_rate: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)


class ModuleProgress:
    """tqdm bars and history for Module.fit (batch_end / epoch_end / eval_end callbacks)."""

    def __init__(self, batches_per_epoch: int, num_epochs: int, *, desc: str, disable: bool):
        self.total = batches_per_epoch
        self.num_epochs = num_epochs
        self.desc = desc
        self.disable = disable
        self.bar: tqdm | None = None
        self.history = History()
        self.optimizer: mx.optimizer.Optimizer | None = None
        self._t0 = time.perf_counter()

    def batch_end(self, param: mx.model.BatchEndParam) -> None:
        if self.bar is None:
            self._t0 = time.perf_counter()
            self.bar = tqdm(
                total=self.total,
                desc=f"{self.desc} epoch {param.epoch + 1}/{self.num_epochs}",
                unit="batch",
                leave=True,
                disable=self.disable,
                mininterval=0.5,
            )
        self.bar.update(1)
        if param.nbatch % 20 == 0 and param.eval_metric is not None:
            values = dict(param.eval_metric.get_name_value())
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in values.items()})

    def epoch_end(self, epoch: int, metric: mx.metric.EvalMetric) -> None:
        values = dict(metric.get_name_value())
        self.history.epoch.append(epoch + 1)
        self.history.train_accuracy.append(float(values.get("accuracy", float("nan"))))
        self.history.train_loss.append(float(values.get("cross-entropy", float("nan"))))
        self.history.epoch_seconds.append(time.perf_counter() - self._t0)
        lr = float("nan")
        if self.optimizer is not None:
            sched = self.optimizer.lr_scheduler
            lr = sched(self.optimizer.num_update) if sched is not None else self.optimizer.lr
        self.history.learning_rate.append(float(lr))
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in values.items()}, refresh=False)
            self.bar.close()
            self.bar = None

    def eval_end(self, param: mx.model.BatchEndParam) -> None:
        values = dict(param.eval_metric.get_name_value())
        acc = float(values.get("accuracy", float("nan")))
        self.history.test_accuracy.append(acc)
        h = self.history
        log.info(epoch_line(param.epoch + 1, self.num_epochs, h.train_loss[-1],
                            h.train_accuracy[-1], acc, h.epoch_seconds[-1]))  # fmt: skip


def epoch_line(
    epoch: int, num_epochs: int, loss: float, train_acc: float, test_acc: float, seconds: float
) -> str:
    """The one line a user sees per epoch."""
    return (
        f"epoch {epoch}/{num_epochs}: train loss {loss:.4f}, train accuracy {train_acc:.4f}, "
        f"test accuracy {test_acc:.4f} ({seconds:.1f} s)"
    )


# ----------------------------------------------------------------------------------------------
# Module training
# ----------------------------------------------------------------------------------------------


def divisor_batch(n: int, limit: int = 256) -> int:
    """The largest batch size <= limit that divides n: Module's evaluation counts the padded
    samples of a last, partial batch, so per-epoch test accuracy is exact only without one."""
    return max(b for b in range(1, min(n, limit) + 1) if n % b == 0)


def lr_schedule(kind: str, *, base_lr: float, total_updates: int, warmup: int = 0):
    """``cosine`` (to 1% of base_lr), ``step`` (x0.1 at 50% and 75%) or ``none``."""
    total_updates = max(total_updates, 1)
    if kind == "cosine":
        return mx.lr_scheduler.CosineScheduler(
            max_update=total_updates,
            base_lr=base_lr,
            final_lr=base_lr * 0.01,
            warmup_steps=min(warmup, total_updates - 1),
        )
    if kind == "step":
        steps = sorted({max(1, int(total_updates * 0.5)), max(2, int(total_updates * 0.75))})
        return mx.lr_scheduler.MultiFactorScheduler(step=steps, factor=0.1, base_lr=base_lr)
    if kind == "none":
        return None
    raise ValueError(f"Expected `--lr-schedule` to be cosine, step or none, got {kind!r}")


def fit_module(
    sym: mx.sym.Symbol,
    train_iter: mx.io.DataIter,
    test_iter: mx.io.DataIter,
    *,
    kv: KV,
    num_epochs: int,
    optimizer: str,
    lr: float,
    lr_sched: str,
    wd: float,
    prefix: str,
    batches_per_epoch: int,
    progress: bool,
    desc: str,
) -> tuple[mx.mod.Module, History, float]:
    """Module.fit with checkpoints each epoch; returns the module, history and train seconds."""
    mod = mx.mod.Module(sym, context=mx.cpu())
    opt_params: dict[str, Any] = {"learning_rate": lr, "wd": wd}
    sched = lr_schedule(
        lr_sched, base_lr=lr, total_updates=num_epochs * batches_per_epoch, warmup=0
    )
    if sched is not None:
        opt_params["lr_scheduler"] = sched
    if optimizer == "sgd":
        opt_params["momentum"] = 0.9
    prog = ModuleProgress(batches_per_epoch, num_epochs, desc=desc, disable=not progress)
    metric = mx.metric.CompositeEvalMetric([mx.metric.Accuracy(), mx.metric.CrossEntropy()])

    checkpoint = mx.callback.do_checkpoint(prefix, period=1)

    def epoch_end(epoch, symbol, arg, aux):
        prog.optimizer = getattr(mod, "_optimizer", None)
        prog.epoch_end(epoch, metric)
        checkpoint(epoch, symbol, arg, aux)

    start = time.perf_counter()
    mod.fit(
        train_iter,
        eval_data=test_iter,
        eval_metric=metric,
        validation_metric="acc",
        kvstore=kv.store,
        optimizer=optimizer,  # a name: Module sets rescale_grad = 1 / (batch * workers)
        optimizer_params=opt_params,
        initializer=mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2),
        num_epoch=num_epochs,
        batch_end_callback=prog.batch_end,
        epoch_end_callback=epoch_end,
        eval_end_callback=prog.eval_end,
    )
    return mod, prog.history, time.perf_counter() - start


# ----------------------------------------------------------------------------------------------
# Gluon training
# ----------------------------------------------------------------------------------------------


def fit_gluon(
    net: mx.gluon.HybridBlock,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    *,
    kv: KV,
    num_epochs: int,
    batch_size: int,
    optimizer: str,
    lr: float,
    lr_sched: str,
    wd: float,
    prefix: str,
    progress: bool,
    desc: str,
    seed: int,
    augment: Callable[[mx.nd.NDArray], mx.nd.NDArray] | None = None,
) -> tuple[History, float]:
    """A plain Gluon loop with a Trainer on ``kv``.

    Exports PREFIX-symbol.json and PREFIX-EPOCH.params after each epoch."""
    x_train, y_train = train
    n = x_train.shape[0]
    batches = n // batch_size
    if batches == 0:
        raise ValueError(f"Expected at least `batch_size` ({batch_size}) training images, got {n}")
    net.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2))
    net.hybridize()
    opt_params: dict[str, Any] = {"learning_rate": lr, "wd": wd}
    sched = lr_schedule(lr_sched, base_lr=lr, total_updates=num_epochs * batches)
    if sched is not None:
        opt_params["lr_scheduler"] = sched
    if optimizer == "sgd":
        opt_params["momentum"] = 0.9
    trainer = mx.gluon.Trainer(net.collect_params(), optimizer, opt_params, kvstore=kv.store)
    loss_fn = mx.gluon.loss.SoftmaxCrossEntropyLoss()
    history = History()
    order_rng = np.random.default_rng(seed + kv.rank)
    start = time.perf_counter()
    for epoch in range(num_epochs):
        t0 = time.perf_counter()
        order = order_rng.permutation(n)
        acc = mx.metric.Accuracy()
        total_loss, seen = 0.0, 0
        bar = tqdm(
            range(batches),
            desc=f"{desc} epoch {epoch + 1}/{num_epochs}",
            unit="batch",
            disable=not progress,
            mininterval=0.5,
        )
        for b in bar:
            idx = order[b * batch_size : (b + 1) * batch_size]
            data = mx.nd.array(x_train[idx])
            if augment is not None:
                data = augment(data)
            label = mx.nd.array(y_train[idx])
            with mx.autograd.record():
                out = net(data)
                loss = loss_fn(out, label)
            loss.backward()
            # dist_sync sums the workers' gradients: normalise by the global batch (as Module).
            trainer.step(batch_size * kv.num_workers)
            acc.update([label], [out])
            total_loss += float(loss.sum().asscalar())
            seen += batch_size
            if b % 20 == 0:
                bar.set_postfix(accuracy=f"{acc.get()[1]:.4f}", loss=f"{total_loss / seen:.4f}")
        bar.set_postfix(
            accuracy=f"{acc.get()[1]:.4f}", loss=f"{total_loss / max(seen, 1):.4f}", refresh=False
        )
        bar.close()
        history.epoch.append(epoch + 1)
        history.train_accuracy.append(float(acc.get()[1]))
        history.train_loss.append(total_loss / max(seen, 1))
        history.learning_rate.append(float(trainer.learning_rate))
        history.epoch_seconds.append(time.perf_counter() - t0)
        test_acc = predict_accuracy(lambda d: net(d), *test, batch_size=256)
        history.test_accuracy.append(test_acc)
        log.info(
            epoch_line(
                epoch + 1,
                num_epochs,
                history.train_loss[-1],
                history.train_accuracy[-1],
                test_acc,
                history.epoch_seconds[-1],
            )
        )
        net.export(prefix, epoch=epoch + 1)
    return history, time.perf_counter() - start


def predict_accuracy(
    forward: Callable[[mx.nd.NDArray], mx.nd.NDArray],
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int,
) -> float:
    correct = 0
    for i in range(0, x.shape[0], batch_size):
        out = forward(mx.nd.array(x[i : i + batch_size]))
        pred = out.argmax(axis=1).asnumpy().astype(np.int64)
        correct += int((pred == y[i : i + batch_size]).sum())
    return correct / max(x.shape[0], 1)


# ----------------------------------------------------------------------------------------------
# Checkpoints: load, evaluate, convert, time
# ----------------------------------------------------------------------------------------------


def logits_symbol(sym: mx.sym.Symbol) -> mx.sym.Symbol:
    """Drop a trailing SoftmaxOutput (and its label) so the model runs without labels."""
    if (
        any(a.endswith("_label") for a in sym.list_arguments())
        and json.loads(sym.tojson())["nodes"][-1]["op"] == "SoftmaxOutput"
    ):
        return sym.get_children()[0]
    return sym


class Predictor:
    """An inference Module bound once for a fixed batch shape."""

    def __init__(
        self,
        sym: mx.sym.Symbol,
        arg_params: dict[str, mx.nd.NDArray] | None,
        aux_params: dict[str, mx.nd.NDArray] | None,
        data_shape: tuple[int, ...],
        *,
        exact: bool = False,
    ):
        """``exact=True`` binds without MXNet's MKLDNN subgraph fusion, which changes the
        outputs of graphs where a convolution feeds a BatchNorm and another layer (see
        binmx.converter.without_subgraph_fusion); accuracy is measured that way, speed with
        MXNet's defaults."""
        self.sym = logits_symbol(sym)
        self.mod = mx.mod.Module(self.sym, data_names=["data"], label_names=None, context=mx.cpu())
        with without_subgraph_fusion() if exact else contextlib.nullcontext():
            self.mod.bind(data_shapes=[("data", data_shape)], for_training=False)
        if arg_params is None:
            self.mod.init_params(mx.init.Xavier())
        else:
            self.mod.set_params(arg_params, aux_params or {}, allow_missing=False)
        self.batch = data_shape[0]

    def __call__(self, data: mx.nd.NDArray) -> mx.nd.NDArray:
        n = data.shape[0]
        if n < self.batch:  # pad the last batch
            pad = mx.nd.zeros((self.batch - n, *data.shape[1:]), dtype=data.dtype)
            data = mx.nd.concat(data, pad, dim=0)
        self.mod.forward(mx.io.DataBatch([data]), is_train=False)
        return self.mod.get_outputs()[0][:n]


def load_params(params_file: str) -> tuple[dict, dict]:
    saved = mx.nd.load(params_file)
    arg = {k[4:]: v for k, v in saved.items() if k.startswith("arg:")}
    aux = {k[4:]: v for k, v in saved.items() if k.startswith("aux:")}
    return arg, aux


TestData = tuple[np.ndarray, np.ndarray] | Callable[[], mx.io.DataIter]


def evaluate_checkpoint(
    symbol_json: str, params_file: str, test: TestData, *, batch_size: int
) -> float:
    """Top-1 accuracy of a saved model on (x, y) arrays or on a fresh DataIter from a factory."""
    sym = mx.sym.load(symbol_json)
    arg, aux = load_params(params_file)
    if isinstance(test, tuple):
        x, y = test
        pred = Predictor(sym, arg, aux, (batch_size, *x.shape[1:]), exact=True)
        return predict_accuracy(pred, x, y, batch_size=batch_size)
    it = test()
    pred = Predictor(sym, arg, aux, it.provide_data[0].shape, exact=True)
    correct = total = 0
    for batch in it:
        n = batch.data[0].shape[0] - (batch.pad or 0)
        out = pred(batch.data[0])[:n]
        label = batch.label[0].asnumpy()[:n].astype(np.int64)
        correct += int((out.argmax(axis=1).asnumpy().astype(np.int64) == label).sum())
        total += n
    return correct / max(total, 1)


def convert(params_file: str, data_shape: tuple[int, ...] | None = None) -> tuple[str, str]:
    """Convert a checkpoint to packed weights (1-bit sign bits; k-bit levels for a k-bit layer
    such as the int8 stem) with BatchNorm folded (fast inference).

    ``data_shape`` is the input shape the converter verifies with (it cannot always infer it,
    e.g. behind a global pooling)."""
    json_path, params_path = binmx.convert_checkpoint(
        params_file, data_shape=None if data_shape is None else tuple(data_shape), fold=True
    )
    return str(json_path), str(params_path)


def time_forward(pred: Predictor, data: mx.nd.NDArray, *, repeats: int, warmup: int = 3) -> float:
    """Median seconds of one forward pass (outputs waited for)."""
    for _ in range(warmup):
        pred(data).wait_to_read()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        pred(data).wait_to_read()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def compare_speed(
    binary: tuple[str, str],
    float_sym: mx.sym.Symbol,
    data_shape: tuple[int, ...],
    *,
    repeats: int,
    seed: int,
) -> dict[str, float]:
    """Median forward time of the converted binary model vs a float model of the same shape.

    Both run in this process on the same engine; the float model has random weights (its speed
    does not depend on them). Runs are interleaved so a busy machine hurts both alike.
    """
    sym_b = mx.sym.load(binary[0])
    arg, aux = load_params(binary[1])
    pred_b = Predictor(sym_b, arg, aux, data_shape)
    mx.random.seed(seed)
    pred_f = Predictor(float_sym, None, None, data_shape)
    data = mx.nd.array(np.random.default_rng(seed).random(data_shape, dtype=np.float32))
    tb, tf = [], []
    for _ in range(3):  # interleave three rounds, keep each side's best median
        tf.append(time_forward(pred_f, data, repeats=repeats))
        tb.append(time_forward(pred_b, data, repeats=repeats))
    t_float, t_binary = min(tf), min(tb)
    return {
        "batch_size": data_shape[0],
        "float_ms": t_float * 1e3,
        "binarized_ms": t_binary * 1e3,
        "speedup": t_float / t_binary,
    }


# ----------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------


def finish_run(
    *,
    results: dict[str, Any],
    history: History,
    prefix: str,
    epoch: int,
    test: TestData,
    eval_batch: int,
    binary: bool,
    convert_model: bool,
    float_sym: mx.sym.Symbol,
    bench_shape: tuple[int, ...],
    bench_repeats: int,
    seed: int,
    out_dir: Path,
    title: str,
) -> dict[str, Any]:
    """Evaluate the last checkpoint, convert it, evaluate and time the binarized model, then
    write training_curves.png and results.json and print the summary."""
    symbol_json = f"{prefix}-symbol.json"
    params_file = f"{prefix}-{epoch:04d}.params"
    results.update(
        float_test_accuracy=evaluate_checkpoint(
            symbol_json, params_file, test, batch_size=eval_batch
        ),
        float_params_bytes=os.path.getsize(params_file),
        float_checkpoint=params_file,
        binarized_test_accuracy=None,
        binarized_params_bytes=None,
        binarized_checkpoint=None,
        compression=None,
        speedup=None,
        speed=None,
        history=history.__dict__,
        threads=os.environ.get("OMP_NUM_THREADS", str(os.cpu_count())),
    )
    if binary and convert_model:
        t0 = time.perf_counter()
        bin_json, bin_params = convert(params_file, (1, *bench_shape[1:]))
        results["convert_seconds"] = time.perf_counter() - t0
        results["binarized_checkpoint"] = bin_params
        results["binarized_params_bytes"] = os.path.getsize(bin_params)
        results["compression"] = results["float_params_bytes"] / results["binarized_params_bytes"]
        results["binarized_test_accuracy"] = evaluate_checkpoint(
            bin_json, bin_params, test, batch_size=eval_batch
        )
        speed = compare_speed(
            (bin_json, bin_params), float_sym, bench_shape, repeats=bench_repeats, seed=seed
        )
        results["speed"] = speed
        results["speedup"] = speed["speedup"]
    plot_history(history, out_dir / "training_curves.png", title=title)
    write_results(out_dir / "results.json", results)
    print_summary(results, out_dir)
    return results


def plot_history(history: History, path: Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(history.epoch, history.train_loss, "o-", label="train cross-entropy")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax1.grid(alpha=0.3)
    ax2.plot(history.epoch, history.train_accuracy, "o-", label="train (running)")
    if history.test_accuracy:
        ax2.plot(
            history.epoch[: len(history.test_accuracy)], history.test_accuracy, "s-", label="test"
        )
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy")
    ax2.legend()
    ax2.grid(alpha=0.3)
    from matplotlib.ticker import MaxNLocator

    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_results(path: Path, results: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def print_summary(results: dict[str, Any], out_dir: Path) -> None:
    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.2f}%"

    def size(v: int | None) -> str:
        return "n/a" if v is None else f"{v:,} bytes"

    lines = [
        "",
        f"== {results['model']} on {results['dataset']} ==",
        f"trained {results['epochs']} epoch(s) on {results['train_samples']:,} images in "
        f"{results['train_seconds']:.1f} s",
        f"test accuracy, float weights:     {pct(results['float_test_accuracy'])}",
        f"test accuracy, binarized model:   {pct(results['binarized_test_accuracy'])}",
        f"model size: float {size(results['float_params_bytes'])}, binarized "
        f"{size(results['binarized_params_bytes'])}"
        + (f" ({results['compression']:.1f}x smaller)" if results.get("compression") else ""),
    ]
    speed = results.get("speed")
    if speed:
        lines.append(
            f"inference, batch {speed['batch_size']}: float {speed['float_ms']:.2f} ms, binarized "
            f"{speed['binarized_ms']:.2f} ms -> {speed['speedup']:.2f}x"
        )
    lines.append(f"outputs in {out_dir}/ (results.json, training_curves.png, checkpoints)")
    print("\n".join(lines), file=sys.stdout, flush=True)
