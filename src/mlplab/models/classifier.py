"""The LightningModule: loss, penalties, metrics and optimizers around an `MLP`."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.strategies import SingleDeviceStrategy
from lightning.pytorch.trainer.states import TrainerFn
from omegaconf import DictConfig, ListConfig, OmegaConf
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from mlplab.models.ensemble import Ensemble, log_mean_prob
from mlplab.models.mlp import MLP
from mlplab.models.regularization import (
    apply_max_norm,
    l1_penalty,
    l2_penalty,
    weight_matrices,
)

LOSSES = ("cross_entropy", "nll")
# `trainer.precision` values whose forward pass runs under autocast, and its dtype.
AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
TRUE_DTYPES = {"bf16-true": torch.bfloat16, "16-true": torch.float16, "64-true": torch.float64}
Batch = tuple[torch.Tensor, torch.Tensor]


def _plain(value: Any) -> Any:
    """OmegaConf containers → plain Python, so checkpoints load with `weights_only=True`."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, tuple):
        return list(value)
    return value


class Classifier(L.LightningModule):
    """An MLP classifier. Every argument is a key of `conf/model/*.yaml` except `in_features`
    and `n_classes` (taken from the datamodule) and `optimizer` / `scheduler` (the configs of
    those groups, kept as plain dicts and instantiated in `configure_optimizers`).

    Optimization is manual: a `training_step` call receives `data.batches_per_call` batches
    and makes one optimizer step per batch (the same steps as one batch per call), stepping
    the lr schedulers, clipping (`gradient_clip_val`) and max-norm itself. This spreads
    Lightning's per-call cost (~1.5 ms here, longer than a small MLP's step) over the batches.
    """

    def __init__(
        self,
        in_features: int,
        n_classes: int,
        hidden_sizes: Sequence[int] = (256, 128),
        activation: str | Sequence[str] = "relu",
        dropout: float | Sequence[float] = 0.0,
        input_dropout: float = 0.0,
        norm: str = "none",
        bias: bool = True,
        init: str = "default",
        init_std: float = 0.01,
        blocks: int = 0,
        l1: float = 0.0,
        l2: float = 0.0,
        max_norm: float | None = None,
        loss: str = "cross_entropy",
        label_smoothing: float = 0.0,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str = "norm",
        ema_decay: float | None = None,
        mixup_alpha: float = 0.0,
        members: int = 1,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
    ) -> None:
        args = dict(locals())
        super().__init__()
        hparams = {k: _plain(v) for k, v in args.items() if k not in ("self", "__class__")}
        self.save_hyperparameters(hparams)
        def mlp() -> MLP:
            return MLP(
                in_features=in_features,
                n_classes=n_classes,
                hidden_sizes=list(hidden_sizes),
                activation=_plain(activation),
                dropout=_plain(dropout),
                input_dropout=input_dropout,
                norm=norm,
                bias=bias,
                init=init,
                init_std=init_std,
                blocks=blocks,
                log_softmax=loss == "nll",
            )

        # One MLP keeps the state-dict keys of checkpoints written before `members` existed.
        self.net: MLP | Ensemble = mlp() if members == 1 else Ensemble([mlp() for _ in range(members)])
        self.l1, self.l2, self.max_norm = l1, l2, max_norm
        self.loss_name, self.label_smoothing = loss, label_smoothing
        self.gradient_clip_val, self.gradient_clip_algorithm = gradient_clip_val, gradient_clip_algorithm
        self._weights = weight_matrices(self.net)
        # An exponential moving average of the weights, updated after every optimizer step.
        # Evaluation (validation, test, predict, figures) runs it instead of `net`, so the
        # checkpoint chosen on validation and its test score are the average's; `net` keeps
        # training, and both are saved, so a resumed run continues exactly.
        self.ema_decay = ema_decay
        # Mixup (Zhang et al. 2018): each training batch becomes lam·x + (1 − lam)·x[perm], its
        # loss the same mix of both labels' losses, lam ~ Beta(alpha, alpha). It needs the
        # labels, so it lives here rather than in `data.augment`, after that has run.
        self.mixup_alpha = mixup_alpha
        self.ema_net: MLP | Ensemble | None = None
        self._ema_pairs: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
        if ema_decay is not None:
            self.ema_net = copy.deepcopy(self.net).requires_grad_(False)
            # Like `_weights`: moving the module to a device keeps these Parameter objects.
            self._ema_pairs = (list(self.ema_net.parameters()), list(self.net.parameters()))
        # Manual optimization: a training_step call may hold several batches (see
        # `TensorBatches`), each of which gets its own optimizer step here.
        self.automatic_optimization = False
        self._monitor: tuple[str | None, bool] = (None, True)
        self._direct = False
        self._validated_epoch: int | None = None  # the last epoch whose validation ran
        self._autocast: torch.dtype | None = None
        self._input_dtype: torch.dtype | None = None  # a "true" precision's (bf16-true, 64-true)
        self._schedule_length: dict[str, int] = {}  # what configure_optimizers sized the schedule to
        # Seconds of fitting before this call (from the checkpoint a fit resumes), so that a
        # resumed run's fit time is the whole run's, not its last call's.
        self.fit_seconds_before = 0.0
        self._fit_started: float | None = None

        # Training metrics: per-step tensors kept on the device and reduced once per epoch.
        # A per-step `self.log`, metric update or running sum is Python work and a possible
        # device sync on every step of a model this small. Validation and test use
        # torchmetrics, where the cost is small and its DDP sync is wanted.
        self._epoch_steps: dict[str, list[torch.Tensor]] = {"loss": [], "correct": [], "l1": [], "l2": []}
        self._epoch_n: list[int] = []
        self._restored_epoch_so_far: dict[str, Any] | None = None
        self.val_loss = MeanMetric()
        self.val_acc = MulticlassAccuracy(num_classes=n_classes, average="micro")
        self.test_loss = MeanMetric()
        self.test_acc = MulticlassAccuracy(num_classes=n_classes, average="micro")
        self.val_acc_best = MaxMetric()
        # Saved in checkpoints so a resumed run keeps its best-so-far.
        self.val_acc_best.persistent(True)

    def use_precision(self, precision: str | None) -> None:
        """Record the run's `trainer.precision` (saved in the checkpoint). A model trained with
        mixed precision then also runs under its autocast outside a trainer (`src/eval.py`,
        `src/predict.py`), so that a checkpoint scores exactly what its run reported."""
        self.hparams["precision"] = precision
        self._autocast = AUTOCAST.get(str(precision))
        # A "true" precision trained the weights in that dtype (Lightning converts the module
        # and its inputs): outside a trainer the model is converted alike, or eval.py scored the
        # checkpoint at 32-bit under the run's name.
        self._input_dtype = TRUE_DTYPES.get(str(precision))
        if self._trainer is None:  # in a fit, Lightning's precision plugin converts the module
            self.to(self._input_dtype or torch.float32)  # 32-true chosen in eval.py: back to 32-bit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [B, C]; or, for a [views, B, features] batch (`data.tta`), the log of the
        mean class probability over the views."""
        if self._autocast is not None and not torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, dtype=self._autocast):
                out = self._forward(x)
            return out.float()  # as the trainer's loss and metrics read it: upcast, exact
        if self._input_dtype is not None and x.is_floating_point():
            x = x.to(self._input_dtype)  # as Lightning's precision plugin feeds it in a fit
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.ema_net if self.ema_net is not None and not self.training else self.net
        if x.dim() != 3:
            return net(x)
        v, b = x.shape[:2]
        # One batch of all views: batchnorm would read a [views, B, F] input as [N, C, L].
        return log_mean_prob(net(x.reshape(v * b, -1)).view(v, b, -1), v)

    @torch.no_grad()
    def _update_ema(self) -> None:
        assert self.ema_net is not None and self.ema_decay is not None
        # The average of the first steps would be mostly the random initialisation: the
        # decay ramps up as (1 + t) / (10 + t) until it reaches ema_decay (timm's warm-up).
        t = self.global_step
        decay = min(self.ema_decay, (1 + t) / (10 + t))
        torch._foreach_lerp_(*self._ema_pairs, 1.0 - decay)
        for avg, live in zip(self.ema_net.buffers(), self.net.buffers()):
            avg.copy_(live)  # batch-norm statistics: those of the live weights, not averaged

    def data_loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.loss_name == "nll" and self.label_smoothing == 0:
            return F.nll_loss(out, y)
        # log_softmax is idempotent, so cross_entropy on log-probabilities is the smoothed NLL.
        return F.cross_entropy(out, y, label_smoothing=self.label_smoothing)

    def training_step(self, batch: Batch | list[Batch], batch_idx: int) -> torch.Tensor | None:
        """One optimizer step per batch; returns the data losses, checked by `FiniteLossGuard`."""
        group = [batch] if isinstance(batch[0], torch.Tensor) else batch
        opt = self.optimizers()
        losses = []
        max_steps = self.trainer.max_steps
        every = self.trainer.log_every_n_steps
        for x, y in group:
            if 0 <= max_steps <= self.global_step:
                break
            loss = self._step(opt, x, y)
            if every and self.global_step % every == 0:
                self._log_step_loss(loss)
            losses.append(loss)
        # Lightning's logging step counts training_step calls; with several optimizer steps a
        # call that would put TensorBoard's x-axis in calls (8 steps each by default). Count
        # steps instead, as Lightning itself assumes (its checkpoint migration sets this
        # counter to global_step); it adds the call's own 1 after this hook.
        self.trainer.fit_loop.epoch_loop._batches_that_stepped = self.global_step - 1
        return torch.stack(losses) if losses else None

    def _log_step_loss(self, loss: torch.Tensor) -> None:
        """`train/loss_step` every `trainer.log_every_n_steps` optimizer steps, at the 0-based
        index of the step just taken (Lightning's convention for its own step logs). Written to
        the loggers directly: `self.log(on_step=True)` is flushed only on Lightning's own
        schedule, once every N training_step calls, so most of these would be dropped."""
        if not self.loggers or self.trainer.sanity_checking:
            return
        metrics = {"train/loss_step": float(loss), "epoch": self.current_epoch}  # one sync per N steps
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self.global_step - 1)

    def _mixup(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(mixed batch, partner labels, lam); lam and the pairing come from torch's seeded RNG."""
        alpha = torch.tensor(float(self.mixup_alpha))
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        perm = torch.randperm(len(x), device=x.device)
        return x * lam + x[perm] * (1.0 - lam), y[perm], lam

    def objective(self, x: torch.Tensor, y: torch.Tensor,
                  mix: tuple[torch.Tensor, float] | None = None) -> tuple[torch.Tensor, ...]:
        """(logits, data loss, data loss + penalties, l1 term, l2 term) of one batch.

        `mix` = (partner labels, lam) for a batch mixed by `_mixup`: the data loss is the same
        mix of the two labels' losses. With `members` > 1 the logits are the ensemble's, the
        data loss and penalty terms (what is logged) are the mean over members, and the total
        (what is differentiated) is the sum of the members' own objectives, so that each
        member's gradient is exactly its own, whatever the optimizer does with its scale.
        """
        if isinstance(self.net, Ensemble):
            members = self.net.member_outputs(x)
            k = members.shape[0]
            out, per_member = self.net.combine(members.detach()), members.flatten(0, 1)
        else:
            k, out = 1, self(x)
            per_member = out
        loss = self.data_loss(per_member, y if k == 1 else y.repeat(k))
        if mix is not None:
            y_b, lam = mix
            loss = lam * loss + (1.0 - lam) * self.data_loss(per_member, y_b if k == 1 else y_b.repeat(k))
        total = loss
        l1 = l2 = loss.new_zeros(())
        if self.l1 > 0:
            l1 = self.l1 * l1_penalty(self._weights) / k
            total = total + l1
        if self.l2 > 0:
            l2 = self.l2 * l2_penalty(self._weights) / k
            total = total + l2
        if k > 1:
            total = total * k
        return out, loss, total, l1, l2

    def _step(self, opt: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        mix = None
        if self.mixup_alpha > 0:
            x, y_b, lam = self._mixup(x, y)
            mix = (y_b, lam)
        out, loss, total, l1, l2 = self.objective(x, y, mix)
        opt.zero_grad(set_to_none=True)
        if self._direct:
            total.backward()
        else:
            self.manual_backward(total)
        if self._direct:
            self._clip_gradients()
            # The step and Lightning's step counting (global_step, max_steps), without its
            # per-step hook dispatch.
            opt._on_before_step()
            opt.optimizer.step()
            opt._on_after_step()
        else:
            opt.step()
        if self.max_norm is not None:
            apply_max_norm(self._weights, self.max_norm)
        if self.ema_net is not None:
            self._update_ema()
        self._step_schedulers("step")
        loss = loss.detach()
        steps = self._epoch_steps
        with torch.no_grad():
            pred = out.argmax(1)
            if mix is None:
                steps["correct"].append((pred == y).sum())
            else:  # credit for each label in proportion to its share of the input
                steps["correct"].append(lam * (pred == y).sum() + (1.0 - lam) * (pred == mix[0]).sum())
        steps["loss"].append(loss)
        if self.l1 > 0:
            steps["l1"].append(l1.detach())
        if self.l2 > 0:
            steps["l2"].append(l2.detach())
        self._epoch_n.append(y.numel())
        return loss

    def _clip_gradients(self) -> None:
        if not self.gradient_clip_val:
            return
        # Per member: one member's spike must not shrink the others' steps.
        for part in self.net.members if isinstance(self.net, Ensemble) else [self.net]:
            if self.gradient_clip_algorithm == "norm":
                torch.nn.utils.clip_grad_norm_(part.parameters(), self.gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_value_(part.parameters(), self.gradient_clip_val)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Lightning's path (DDP, 16-mixed) calls this once the loss scaler has unscaled the
        # gradients: clipped before, under 16-mixed they were still ×65536 and every step shrank
        # to almost nothing. A fused optimizer unscales inside its own step, so unscale here.
        if self._direct or not self.gradient_clip_val:
            return
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if scaler is not None and getattr(optimizer, "_step_supports_amp_scaling", False):
            scaler.unscale_(optimizer)
        self._clip_gradients()

    def _float32_metrics(self) -> None:
        """A `*-true` half precision converts the whole module, torchmetrics states included
        (`Module.to(dtype)`), so val/loss and test/loss were summed in bf16: three significant
        digits, early stopping saw ties, and eval.py disagreed with the run's summary."""
        for metric in (self.val_loss, self.test_loss, self.val_acc_best):
            # Their states, not `metric.dtype`, which `Module.to` leaves at float32.
            if any(t.dtype in (torch.bfloat16, torch.float16) for t in metric.metric_state.values()):
                metric.set_dtype(torch.float32)

    def on_validation_start(self) -> None:
        self._float32_metrics()

    def on_test_start(self) -> None:
        self._float32_metrics()

    def on_fit_start(self) -> None:
        self._fit_started = time.time()
        self._float32_metrics()
        # Lightning's backward and optimizer step dispatch ~6 hooks to every callback: at
        # ~0.5 ms a step that is a quarter of a small MLP's step on a CPU. On one device at
        # 32-bit precision, or bf16 (autocast only, no loss scaler), they do nothing else, so
        # call torch directly there; DDP (gradient sync) and 16-mixed (loss scaling) go
        # through Lightning. Autocast itself wraps the step either way (training_step's context).
        strategy = self.trainer.strategy
        plugin = strategy.precision_plugin
        unscaled = type(plugin) is Precision or (type(plugin) is MixedPrecision and plugin.scaler is None)
        self._direct = isinstance(strategy, SingleDeviceStrategy) and unscaled

    def on_train_start(self) -> None:
        # A run resumed mid-epoch (Ctrl-C) goes on with that epoch's steps so far (Lightning
        # calls no on_train_epoch_start for it); one saved at an epoch's end holds that whole
        # epoch, already logged, and starts the next.
        so_far, self._restored_epoch_so_far = self._restored_epoch_so_far, None
        if so_far is not None and so_far.get("epoch") == self.current_epoch and len(so_far["n"]):
            self._epoch_n = [int(n) for n in so_far["n"]]
            self._epoch_steps = {k: list(so_far[k].to(self.device).unbind()) if k in so_far and len(so_far[k]) else []
                                 for k in self._epoch_steps}
        # After a resume: Lightning restored the scheduler's own length (OneCycleLR's total
        # steps, cosine's T_max) from the checkpoint. A fit of another length would either
        # step past the end (OneCycleLR raises mid-epoch) or re-warm the learning rate.
        for config in self.trainer.lr_scheduler_configs:
            sched, planned = config.scheduler, self._schedule_length
            stored = {k: getattr(sched, k, None) for k in planned}
            if stored != planned:
                from mlplab.config import ResumeRefused

                raise ResumeRefused(
                    f"trainer.max_epochs={self.trainer.max_epochs}: the checkpoint's {type(sched).__name__} "
                    f"was planned for {stored}, this fit needs {planned}; a resumed run cannot change the "
                    "length of its schedule (resume with its own trainer.max_epochs, or start a new run)")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Dropout masks and mixup draw from torch's global generator, which Lightning does not
        # checkpoint and a resumed run re-seeds: without its state, a resumed run would train
        # with other masks than the uninterrupted run.
        rng: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint["rng"] = rng
        since = time.time() - self._fit_started if self._fit_started is not None else 0.0
        checkpoint["fit_seconds"] = self.fit_seconds_before + since
        # The epoch's steps so far: a run resumed mid-epoch (Ctrl-C) logs train/loss and
        # train/acc over the whole epoch, as the uninterrupted run does, not over its rest.
        checkpoint["epoch_so_far"] = {
            "epoch": self.current_epoch if self._trainer is not None else None,
            "n": torch.tensor(self._epoch_n, dtype=torch.int64),
            **{k: torch.stack(v) if v else torch.empty(0) for k, v in self._epoch_steps.items()},
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        rng = checkpoint.get("rng")
        # Only when a fit resumes: loading a checkpoint to evaluate must not move the caller's
        # generator.
        if self._trainer is None or self.trainer.state.fn != TrainerFn.FITTING:
            return
        self.fit_seconds_before = float(checkpoint.get("fit_seconds", 0.0))
        self._restored_epoch_so_far = checkpoint.get("epoch_so_far")
        if rng is None:
            return
        torch.set_rng_state(rng["torch"])
        cuda = rng.get("cuda")
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)

    def _step_schedulers(self, interval: str) -> None:
        """What Lightning does for automatic optimization: step each scheduler of this
        interval every `frequency` steps or epochs; plateau schedulers get their metric."""
        count = self.global_step if interval == "step" else self.current_epoch + 1
        for config in self.trainer.lr_scheduler_configs:
            if config.interval != interval or count % config.frequency:
                continue
            if not isinstance(config.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                config.scheduler.step()
                continue
            if self._validated_epoch != self.current_epoch:
                continue  # trainer.check_val_every_n_epoch > 1: no new figure this epoch
            monitor, strict = self._monitor
            metric = self.trainer.callback_metrics.get(monitor)
            if metric is None:
                if strict:
                    raise RuntimeError(
                        f"scheduler.monitor={monitor!r}: no such metric was logged this epoch; "
                        f"available: {', '.join(sorted(self.trainer.callback_metrics))}"
                    )
                continue
            config.scheduler.step(metric)

    def on_train_epoch_end(self) -> None:
        self._step_schedulers("epoch")
        steps, sizes = self._epoch_steps, self._epoch_n
        self._epoch_steps = {k: [] for k in steps}
        self._epoch_n = []
        if not sizes:
            return
        n = torch.tensor(sizes, dtype=torch.float32, device=self.device)
        total = n.sum()

        def mean(values: list[torch.Tensor]) -> torch.Tensor:  # sample-weighted over the steps
            return (torch.stack(values).float() * n).sum() / total

        # Ranks see equally long shards, so the mean of per-rank means is the global mean.
        self.log("train/loss", mean(steps["loss"]), sync_dist=True)
        self.log("train/acc", torch.stack(steps["correct"]).sum() / total, sync_dist=True)
        if self.l1 > 0:
            self.log("train/l1", mean(steps["l1"]), sync_dist=True)
        if self.l2 > 0:
            self.log("train/l2", mean(steps["l2"]), sync_dist=True)

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], loss_m: MeanMetric,
                   acc_m: MulticlassAccuracy) -> None:
        x, y = batch
        out = self(x)
        loss_m.update(self.data_loss(out, y), weight=y.numel())
        acc_m.update(out, y)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.val_loss, self.val_acc)

    def on_validation_epoch_end(self) -> None:
        # MeanMetric/Accuracy.compute() all-reduce under DDP, so every rank logs the same value.
        loss, acc = self.val_loss.compute(), self.val_acc.compute()
        self.val_loss.reset()
        self.val_acc.reset()
        self.log("val/loss", loss, prog_bar=True)
        self.log("val/acc", acc, prog_bar=True)
        if self.trainer.sanity_checking:  # a best-so-far of an untrained model means nothing
            return
        self._validated_epoch = self.current_epoch
        self.val_acc_best.update(acc)
        self.log("val/acc_best", self.val_acc_best.compute())

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.test_loss, self.test_acc)

    def on_test_epoch_end(self) -> None:
        self.log("test/loss", self.test_loss.compute())
        self.log("test/acc", self.test_acc.compute())
        self.test_loss.reset()
        self.test_acc.reset()

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        # In float32 whatever the weights are: predict.py's CSV goes through numpy, which has no
        # bfloat16 (a bf16-true checkpoint ended in a TypeError), and a bf16 softmax ties classes.
        out = self(x).float()
        return torch.softmax(out, dim=1) if self.loss_name != "nll" else out.exp()

    def configure_optimizers(self) -> Any:
        opt_cfg = dict(self.hparams.optimizer or {"_target_": "torch.optim.Adam", "_partial_": True, "fused": True})
        optimizer = instantiate(opt_cfg)(params=self.net.parameters())
        sched_cfg = self.hparams.scheduler
        if not sched_cfg or not sched_cfg.get("scheduler"):
            return optimizer
        sched_cfg = dict(sched_cfg)
        # Lightning ignores these under manual optimization; `_step_schedulers` uses them.
        self._monitor = (sched_cfg.pop("monitor", None), sched_cfg.pop("strict", True))
        factory = instantiate(sched_cfg.pop("scheduler"))
        self._schedule_length = self._scheduler_lengths(factory, sched_cfg)
        scheduler = factory(optimizer, **self._schedule_length)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, **sched_cfg}}

    def _scheduler_lengths(self, factory: Any, sched_cfg: Mapping[str, Any]) -> dict[str, int]:
        """Fill the schedule length a scheduler needs from the trainer, unless the config set it:
        in the scheduler's own steps, as `_step_schedulers` takes them (once an `interval`,
        every `frequency`-th). Sized in optimizer steps whatever the interval, a one-cycle
        schedule stepped once an epoch stayed in its warm-up (max_lr/25) for the whole run, and
        with frequency 2 a cosine or one-cycle schedule stopped half-way through its decay."""
        cls = getattr(factory, "func", factory)
        given = getattr(factory, "keywords", {})
        steps = sched_cfg.get("interval", "epoch") == "step"
        length = self._optimizer_steps() if steps else self.trainer.max_epochs
        length = max(1, length // int(sched_cfg.get("frequency") or 1))
        if cls is torch.optim.lr_scheduler.OneCycleLR and "total_steps" not in given:
            return {"total_steps": length}
        if cls is torch.optim.lr_scheduler.CosineAnnealingLR and given.get("T_max") is None:
            return {"T_max": length}
        return {}

    def _optimizer_steps(self) -> int:
        """Optimizer steps in the whole fit: Lightning counts training_step calls, and a call
        may hold several batches."""
        calls = self.trainer.estimated_stepping_batches  # also sets up the train loader
        if not math.isfinite(calls):
            raise ValueError("a schedule over steps needs trainer.max_epochs or trainer.max_steps")
        loader = self.trainer.train_dataloader
        per_epoch = self.trainer.num_training_batches
        if hasattr(loader, "batches_in") and math.isfinite(per_epoch):
            steps = loader.batches_in(int(per_epoch)) * self.trainer.max_epochs
            if self.trainer.max_steps > 0:
                steps = min(steps, self.trainer.max_steps)
            return max(1, steps)
        return max(1, int(calls))
