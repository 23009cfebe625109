"""`python -m mlplab.bench`: steady-state epoch time of three ways to train the same MLP.

a. `plain`: a hand-written PyTorch loop over in-memory tensors (the floor), with
   `torch.optim.Adam` as most loops construct it; `plain_fused` is the same loop with
   `Adam(fused=True)`, which mlplab's optimizer configs use, for a like-for-like ratio (b/a');
b. `mlplab`: `train()`, exactly as `src/train.py` runs it (TensorBoard logger and figures,
   checkpointing, early stopping, progress bar, validation every epoch), timed by a callback;
c. `torchvision`: a per-sample `torchvision.datasets.MNIST` + transforms + `DataLoader`
   pipeline in Lightning, the common way (e.g. lightning-hydra-template's), with mlplab's
   module and fused Adam, so that c/b measures the data path alone.

All: MNIST, 784-128-64-10 ReLU, Adam 1e-3, 55,000 training and 5,000 validation images
per epoch, at `--precision` (32-true, or bf16-mixed: every variant's forward pass under bf16
autocast, as `trainer.precision=bf16-mixed` runs it). Each (variant, batch size) runs in its
own process so peak memory is its own. An epoch is timed from its first batch to the next
epoch's (validation, checkpointing and logging included); a run's figure is the median of its
epochs after the first (warm-up). Every variant runs `--rounds` times, interleaved; the table
gives medians over the rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = ("plain", "plain_fused", "mlplab", "torchvision")
# The ratios a variant's row carries, b/a, b/a' (both with fused Adam) and c/b, each as
# (key of the median ratio, key of the per-round ratios, the variant divided by).
PAIRS = {"mlplab": [("ratio", "round_ratios", "plain"), ("ratio_fused", "round_ratios_fused", "plain_fused")],
         "torchvision": [("ratio", "round_ratios", "mlplab")]}
HIDDEN = [128, 64]
LR = 1e-3
MEAN, STD = 0.1307, 0.3081


def _device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda: no CUDA device is available here (use --device cpu)")
    return torch.device(name)


def _peak_memory_mb(device: Any) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


PRECISIONS = ("32-true", "bf16-mixed")


def _autocast(device: Any, precision: str) -> Any:
    import torch

    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _plain(batch_size: int, epochs: int, data_dir: str, device: Any, fused: bool, precision: str) -> list[float]:
    import torch
    from torch import nn

    from mlplab.data.base import seeded_split
    from mlplab.data.images import normalize
    from mlplab.data.sources import load_split

    x, y = load_split("mnist", data_dir, "train")
    keep, hold = seeded_split(len(y), 5000, 0)
    xtr, ytr = x[keep].to(device), y[keep].to(device)
    xva, yva = x[hold].to(device), y[hold].to(device)
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    width = 784
    for h in HIDDEN:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    net = nn.Sequential(*layers, nn.Linear(width, 10)).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=LR, fused=fused or None)
    times = []
    for epoch in range(epochs):
        _sync(device)
        start = time.perf_counter()
        net.train()
        order = torch.randperm(len(ytr), generator=torch.Generator().manual_seed(epoch)).to(device)
        for i in range(0, len(ytr), batch_size):
            idx = order[i : i + batch_size]
            with _autocast(device, precision):
                loss = nn.functional.cross_entropy(net(normalize(xtr[idx], MEAN, STD)), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad(), _autocast(device, precision):
            correct = sum(
                (net(normalize(xva[i : i + 1024], MEAN, STD)).argmax(1) == yva[i : i + 1024]).sum()
                for i in range(0, len(yva), 1024)
            )
        float(correct)  # the one sync a real loop makes to report accuracy
        times.append(time.perf_counter() - start)
    return times


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timer(path: str | None = None) -> Any:
    import lightning as L

    class EpochTimer(L.Callback):
        """Whole epochs: from one epoch's first training batch to the next epoch's (the last
        to the end of training), so validation, checkpointing and epoch-end logging count.
        With `path`, also written there as JSON after every epoch (for a run inside `train()`)."""

        def __init__(self) -> None:
            self.times: list[float] = []
            self._start: float | None = None

        def _lap(self, pl_module: L.LightningModule) -> None:
            _sync(pl_module.device)
            now = time.perf_counter()
            if self._start is not None:
                self.times.append(now - self._start)
                if path:
                    Path(path).write_text(json.dumps(self.times))
            self._start = now

        def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            self._lap(pl_module)

        def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            self._lap(pl_module)

    return EpochTimer()


def epoch_timer(path: str) -> Any:
    """`+callbacks.bench_timer={_target_: mlplab.bench.epoch_timer, path: …}`."""
    return _timer(path)


# What every variant shares, so the mlplab variant's `--set` may not change it: the whole model
# and optimizer groups, and these keys.
FIXED_GROUPS = ("model", "optimizer")
FIXED = ("paths.data_dir", "data", "data.batch_size", "trainer", "trainer.max_epochs", "trainer.accelerator",
         "trainer.devices", "trainer.precision", "torch_threads")
# These change how many samples an epoch trains on, or cut the timed epochs short: the mlplab
# variant's seconds would no longer compare with the loops' 55,000 samples an epoch.
EPOCH_KEYS = ("data.val_size", "trainer.limit_train_batches", "trainer.limit_val_batches", "trainer.max_steps",
              "trainer.max_time", "trainer.val_check_interval", "trainer.check_val_every_n_epoch")


def _compose(batch_size: int, epochs: int, data_dir: str, device: Any, out: Path, extra: list[str],
             precision: str = "32-true") -> Any:
    """The mlplab variant's config, as src/train.py would compose it, with its run dir `out`."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    overrides = [
        f"paths.data_dir={data_dir}",
        f"model.hidden_sizes=[{','.join(map(str, HIDDEN))}]",
        "model.dropout=0.0",
        "optimizer=adam",
        f"optimizer.lr={LR}",
        f"data.batch_size={batch_size}",
        f"trainer.max_epochs={epochs}",
        f"trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}",
        "trainer.devices=1",
        f"trainer.precision={precision}",
        f"callbacks.early_stopping.patience={epochs + 1}",  # on, but must not end the timing early
        *extra,
    ]
    # Timed inside train() itself: the same validation, objects and run as src/train.py.
    overrides.append(f"+callbacks.bench_timer={{_target_:mlplab.bench.epoch_timer,path:'{out / 'epoch_times.json'}'}}")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(out)
        cfg.hydra.job.name = "bench"
    HydraConfig.instance().set_config(cfg)
    return cfg


def _mlplab(batch_size: int, epochs: int, data_dir: str, device: Any, out: Path, extra: list[str],
            precision: str) -> list[float]:
    from mlplab.training import train

    train(_compose(batch_size, epochs, data_dir, device, out, extra, precision))
    return json.loads((out / "epoch_times.json").read_text())


def check_overrides(overrides: list[str], batch_size: int, epochs: int, data_dir: str, device: Any,
                    precision: str = "32-true") -> str | None:
    """Why `--set` cannot run (one line), or None: checked before any variant runs, as
    src/train.py checks its command line."""
    from mlplab.cli import unknown_overrides
    from mlplab.config import ConfigError, validate

    bad = [o for o in overrides if "=" not in o and not o.startswith("~")]  # `~key` deletes: no value
    if bad:
        return f"--set {bad[0]}: expected KEY=VALUE, a Hydra override such as data.batches_per_call=1"
    unknown = unknown_overrides(["bench", *overrides], ROOT / "conf", "train")
    if unknown:  # a misspelt key is not one the bench fixes
        return f"--set: {unknown[0]}"
    for o in overrides:
        key = o.lstrip("+~").split("=", 1)[0].strip()
        if key in EPOCH_KEYS:
            return (f"--set={o}: the bench times whole epochs of the same 55,000 training images, with their "
                    "validation, in every variant")
        if key in FIXED or key.split(".")[0] in FIXED_GROUPS:
            option = {"trainer.max_epochs": "--epochs", "data.batch_size": "--batch-sizes", "torch_threads": "--threads",
                      "trainer.precision": "--precision"}.get(key, "--batch-sizes, --epochs, --device or --precision")
            return (f"--set={o}: the bench fixes {key} (the same model, optimizer, batch size, epochs, device and "
                    f"precision in every variant); use {option}")
    try:
        validate(_compose(batch_size, epochs, data_dir, device, Path("unused"), overrides, precision))
    except ConfigError as err:
        return f"--set: {err}"
    except Exception as err:  # noqa: BLE001 -- Hydra's composition errors have several types
        return f"--set: {str(err).strip().splitlines()[0]}"
    return None


def _torchvision(batch_size: int, epochs: int, data_dir: str, device: Any, precision: str) -> list[float]:
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    from mlplab.data.base import seeded_split
    from mlplab.models.classifier import Classifier

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,)),
                             transforms.Lambda(lambda t: t.view(-1))])
    full = datasets.MNIST(data_dir, train=True, transform=tf)
    keep, hold = seeded_split(len(full), 5000, 0)
    train = DataLoader(Subset(full, keep.tolist()), batch_size=batch_size, shuffle=True)
    val = DataLoader(Subset(full, hold.tolist()), batch_size=1024)
    torch.manual_seed(0)
    model = Classifier(784, 10, hidden_sizes=HIDDEN, dropout=0.0,
                       optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": LR, "fused": True})
    timer = _timer()
    trainer = L.Trainer(max_epochs=epochs, accelerator="gpu" if device.type == "cuda" else "cpu",
                        devices=1, precision=precision, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[timer], num_sanity_val_steps=0)
    trainer.fit(model, train_dataloaders=train, val_dataloaders=val)
    return timer.times


def run_one(variant: str, batch_size: int, epochs: int, data_dir: str, device_name: str,
            extra: list[str], threads: int | None = None, precision: str = "32-true") -> dict[str, Any]:
    """One (variant, batch size) measurement in this process."""
    import torch

    from mlplab.training import skip_failing_nvml_probe

    if threads:
        torch.set_num_threads(threads)
        extra = [*extra, f"torch_threads={threads}"]
    device = _device(device_name)
    skip_failing_nvml_probe()  # importing lightning turns the probe on for every variant
    with tempfile.TemporaryDirectory() as tmp:
        if variant in ("plain", "plain_fused"):
            times = _plain(batch_size, epochs, data_dir, device, variant == "plain_fused", precision)
        elif variant == "mlplab":
            times = _mlplab(batch_size, epochs, data_dir, device, Path(tmp), extra, precision)
        else:
            times = _torchvision(batch_size, epochs, data_dir, device, precision)
    steady = times[1:]
    median = statistics.median(steady)
    return {
        "variant": variant,
        "batch_size": batch_size,
        "epoch_seconds": round(median, 4),
        "all_epoch_seconds": [round(t, 4) for t in times],
        "samples_per_second": round(55000 / median, 1),
        "peak_memory_mb": round(_peak_memory_mb(device), 1),
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "precision": precision,
    }


def _versions() -> dict[str, str]:
    import lightning
    import torch
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "lightning": lightning.__version__,
            "cpu": platform.processor() or platform.machine(), "cores": str(os.cpu_count())}


def combine(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (variant, batch size) from several rounds of runs: the median over rounds
    of each run's median epoch, and b/a and c/b as medians of the ratios within each round.
    On a shared virtual machine speed drifts by tens of percent over minutes; runs of the
    same round are seconds apart, so their ratio is what drift disturbs least."""
    by: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in runs:
        by.setdefault((r["variant"], r["batch_size"]), []).append(r)
    rows = []
    for (variant, bs), rs in by.items():
        median = statistics.median(r["epoch_seconds"] for r in rs)
        row = {**rs[0], "epoch_seconds": round(median, 4), "samples_per_second": round(55000 / median, 1),
               "peak_memory_mb": max(r["peak_memory_mb"] for r in rs),
               "round_epoch_seconds": [r["epoch_seconds"] for r in rs]}
        row.pop("all_epoch_seconds", None)
        for key, rounds_key, pair in PAIRS.get(variant, ()):
            if (pair, bs) in by:
                ratios = [r["epoch_seconds"] / p["epoch_seconds"] for r, p in zip(rs, by[(pair, bs)], strict=False)]
                row[key] = round(statistics.median(ratios), 3)
                row[rounds_key] = [round(x, 3) for x in ratios]
        rows.append(row)
    return rows


def table(results: list[dict[str, Any]]) -> str:
    def shown(r: dict[str, Any], key: str, rounds_key: str) -> str:
        ratio, spread = r.get(key), r.get(rounds_key, [])
        if ratio is None:
            return ""
        return f"{ratio:.2f}" + (f" ({min(spread):.2f}–{max(spread):.2f})" if len(spread) > 1 else "")

    by = {(r["variant"], r["batch_size"]): r for r in results}
    lines = ["| batch | variant | s/epoch | samples/s | peak MB | b/a | b/a' | c/b |", "|---|---|---|---|---|---|---|---|"]
    for bs in sorted({r["batch_size"] for r in results}):
        for variant in VARIANTS:
            r = by.get((variant, bs))
            if r is None:
                continue
            ba, ba_fused = (shown(r, "ratio", "round_ratios"), shown(r, "ratio_fused", "round_ratios_fused")) if variant == "mlplab" else ("", "")
            cb = shown(r, "ratio", "round_ratios") if variant == "torchvision" else ""
            lines.append(f"| {bs} | {variant} | {r['epoch_seconds']:.3f} | {r['samples_per_second']:.0f} "
                         f"| {r['peak_memory_mb']:.0f} | {ba} | {ba_fused} | {cb} |")
    return "\n".join(lines)


def _earlier_report(path: Path) -> bool:
    try:
        report = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(report, dict) and {"versions", "results", "runs"} <= report.keys()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlplab.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--batch-sizes", default="64,128,256", help="comma-separated (default 64,128,256)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run, the first is warm-up (≥ 4)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs of every variant per batch size, interleaved (default 3); medians are reported")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--precision", default="32-true", choices=PRECISIONS,
                        help="every variant's (default 32-true); bf16-mixed as trainer.precision=bf16-mixed runs")
    parser.add_argument("--data-dir", default=os.environ.get("MLPLAB_DATA_DIR", "data"))
    parser.add_argument("--out", default="outputs/bench/bench.json")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads in every variant (default: torch's, one per core)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a Hydra override for the mlplab variant, e.g. --set data.batches_per_call=1")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child process mode
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.batch_sizes.split(",")]
    except ValueError:
        parser.error(f"--batch-sizes={args.batch_sizes!r}: expected comma-separated integers")
    if any(s < 1 or s > 55000 for s in sizes):
        parser.error(f"--batch-sizes={args.batch_sizes}: each must be in [1, 55000]")
    if args.epochs < 4:
        parser.error(f"--epochs={args.epochs}: need ≥ 4 (one warm-up + the median of ≥ 3)")
    if args.rounds < 1:
        parser.error(f"--rounds={args.rounds}: need ≥ 1")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads={args.threads}: need ≥ 1")
    if args.threads is not None and args.threads > (usable := len(os.sched_getaffinity(0))):
        # More threads than CPUs only measures their contention, not the training path.
        parser.error(f"--threads={args.threads}: more than the {usable} CPUs this process may use")
    variants = args.variants.split(",")
    if unknown := [v for v in variants if v not in VARIANTS]:
        parser.error(f"--variants: unknown {unknown}; expected some of {', '.join(VARIANTS)}")
    if len(set(variants)) < len(variants):
        # Ratios pair each round's runs of two variants; a repeated one would pair the wrong runs.
        parser.error(f"--variants={args.variants}: each variant at most once")
    device = _device(args.device)  # fail before any work if the device is unavailable
    # The child processes run in the repository root: a relative path means the caller's folder.
    args.data_dir = str(Path(args.data_dir).expanduser().resolve())
    if (blocked := next((p for p in Path(args.out).parents if p.exists() and not p.is_dir()), None)) is not None:
        parser.error(f"--out={args.out}: {blocked} is a file, not a directory")
    if Path(args.out).is_dir():
        parser.error(f"--out={args.out}: a directory; expected the JSON file to write, e.g. {Path(args.out) / 'bench.json'}")
    if Path(args.out).suffix != ".json":
        parser.error(f"--out={args.out}: expected a .json file name, e.g. outputs/bench/bench.json")
    if Path(args.out).exists() and not _earlier_report(Path(args.out)):
        # Only an earlier bench's results are replaced: a checkpoint or a user's file is never lost.
        parser.error(f"--out={args.out}: exists and is not an earlier bench's results; choose another file")
    if len(set(sizes)) < len(sizes):
        parser.error(f"--batch-sizes={args.batch_sizes}: each batch size at most once")
    if args.set and not args.one and (why := check_overrides(args.set, sizes[0], args.epochs, args.data_dir, device,
                                                             args.precision)):
        parser.error(why)

    if args.one:
        result = run_one(variants[0], sizes[0], args.epochs, args.data_dir, args.device, args.set, args.threads,
                         args.precision)
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    from mlplab.data.sources import DataError, provision

    try:
        provision("mnist", args.data_dir)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    runs = []
    for bs in sizes:
        for round_ in range(args.rounds):
            # Alternate the order so that neither variant always runs first after a slow one.
            for variant in variants if round_ % 2 == 0 else variants[::-1]:
                cmd = [sys.executable, "-m", "mlplab.bench", "--one", "--variants", variant,
                       "--batch-sizes", str(bs), "--epochs", str(args.epochs), "--device", args.device,
                       "--data-dir", args.data_dir, "--precision", args.precision, *(f"--set={o}" for o in args.set),
                       *(["--threads", str(args.threads)] if args.threads else [])]
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
                line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
                if proc.returncode != 0 or line is None:
                    print(f"error: {variant} at batch {bs} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                    return 1
                runs.append(json.loads(line[len("RESULT "):]))
                r = runs[-1]
                print(f"{variant:>11} batch {bs:>4} round {round_ + 1}: {r['epoch_seconds']:.3f} s/epoch", flush=True)
    results = combine(runs)
    report = {"versions": _versions(), "device": results[0]["device"], "threads": results[0]["threads"],
              "precision": args.precision,
              "epochs": args.epochs, "rounds": args.rounds, "command": "python -m mlplab.bench " + " ".join(argv or sys.argv[1:]),
              "results": results, "runs": runs}
    out = Path(args.out)
    tmp = out.with_suffix(".json.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        os.replace(tmp, out)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        print(table(results), file=sys.stderr)
        print(f"error: --out={args.out}: cannot write the results ({err.strerror})", file=sys.stderr)
        return 1
    v = report["versions"]
    print(f"\ndevice {report['device']} ({report['threads']} threads, {args.precision}), torch {v['torch']}, "
          f"torchvision {v['torchvision']}, lightning {v['lightning']}, python {v['python']}")
    print(table(results))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
