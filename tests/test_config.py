"""Each invalid value is refused before anything runs, naming the key, value and what is allowed."""

import pytest
import torch

from mlplab.config import ConfigError, validate


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.activation=relux"], "model.activation='relux': expected one of relu"),
        (["model.activation=[relu,tanh,relu]"], "model.activation=['relu', 'tanh', 'relu']: a per-layer list needs 2"),
        (["model.dropout=[0.1]"], "model.dropout=[0.1]: a per-layer list needs 2"),
        (["model.dropout=1.0"], "model.dropout=1.0: expected a value in [0, 1)"),
        (["model.dropout=-0.1"], "model.dropout=-0.1: expected a value in [0, 1)"),
        (["model.input_dropout=1.5"], "model.input_dropout=1.5"),
        (["model.l1=-1e-5"], "model.l1=-1e-05: expected a number ≥ 0"),
        (["model.l2=-1"], "model.l2=-1: expected a number ≥ 0"),
        (["model.hidden_sizes=[128,0]"], "model.hidden_sizes=[128, 0]: expected a list of positive integers"),
        (["model.hidden_sizes=[-4]"], "model.hidden_sizes=[-4]"),
        (["model.norm=groupnorm"], "model.norm='groupnorm': expected one of none, batchnorm, layernorm"),
        (["model.init=orthogonal"], "model.init='orthogonal': expected one of default"),
        (["model.loss=hinge"], "model.loss='hinge': expected one of cross_entropy, nll"),
        (["model.max_norm=0"], "model.max_norm=0: expected null or a number > 0"),
        (["optimizer.lr=-0.1"], "optimizer.lr=-0.1: expected a number > 0"),
        (["optimizer.lr=fast"], "optimizer.lr='fast': expected a float"),
        (["optimizer=momentum", "optimizer.momentum=-0.9"], "optimizer.momentum=-0.9"),
        # These failed inside torch, with a traceback and a `failed` run directory left behind.
        (["optimizer.betas=[0.9]"], "optimizer.betas=[0.9]: expected two numbers in [0, 1)"),
        (["optimizer.betas=[0.9,1.5]"], "optimizer.betas=[0.9, 1.5]: expected two numbers in [0, 1)"),
        (["optimizer.eps=-1"], "optimizer.eps=-1: expected a number ≥ 0"),
        (["optimizer=adadelta", "optimizer.rho=2"], "optimizer.rho=2: expected a number in [0, 1]"),
        (["scheduler=step", "scheduler.scheduler.step_size=0"], "scheduler.scheduler.step_size=0: expected an integer ≥ 1"),
        (["scheduler=plateau", "scheduler.scheduler.factor=2"], "scheduler.scheduler.factor=2: expected a number in (0, 1)"),
        (["scheduler=onecycle", "scheduler.scheduler.pct_start=1.5"], "scheduler.scheduler.pct_start=1.5"),
        (["scheduler=onecycle", "scheduler.scheduler.pct_start=1"], "pct_start=1: expected a float in [0, 1]"),
        (["ckpt_path="], "ckpt_path='': expected the path of a checkpoint"),
        (["ckpt_path=123"], "ckpt_path=123: expected the path of a checkpoint"),
        (["callbacks.early_stopping.min_delta=-1"], "callbacks.early_stopping.min_delta=-1: expected a number ≥ 0"),
        (["data.batch_size=0"], "data.batch_size=0: expected an integer > 0"),
        (["data.val_size=60000"], "data.val_size=60000: must be smaller than the 60000-image training set"),
        (["data.val_size=-1"], "data.val_size=-1: expected an integer ≥ 0"),
        (["data.val_size=0", "scheduler=plateau"], "scheduler.monitor='val/loss': needs a validation split"),
        (["data=synthetic", "data.n_classes=1"], "data.n_classes=1: expected an integer ≥ 2"),
        (["data=synthetic", "data.val_size=1600"], "data.val_size=1600: must be smaller than the 1600 samples"),
        (["data=synthetic", "data.kind=spirals"], "data.kind='spirals': expected one of clusters, random_labels"),
        (["+model.dropuot=0.2"], "model.dropuot: not an argument of mlplab.models.classifier.Classifier (did you mean 'dropout'?)"),
        (["trainer.max_epochs=0"], "trainer.max_epochs=0"),
        (["callbacks.early_stopping.mode=up"], "callbacks.early_stopping.mode='up': expected min or max"),
        (["callbacks.early_stopping.monitor=val/accuracy"], "callbacks.early_stopping.monitor='val/accuracy'"),
        (["callbacks.model_checkpoint.filename=../../escape"], "callbacks.model_checkpoint.filename='../../escape'"),
        (["optimized_metric=val/f1"], "optimized_metric='val/f1'"),
        (["+data.augment.rotation=10"], "data.augment.rotation: not an argument of mlplab.data.augment.Augment (did you mean 'rotate'?)"),
        (["data.augment.shift=2.5"], "data.augment.shift=2.5: expected an integer in [0, 8]"),
        (["data.augment.hflip=yes"], "data.augment.hflip='yes': expected true or false"),
        (["data.augment.rotate=-5"], "data.augment.rotate=-5: expected degrees in [0, 180]"),
        (["data.augment.scale=1.5"], "data.augment.scale=1.5: expected a value in [0, 1)"),
        (["data.augment.elastic_sigma=0"], "data.augment.elastic_sigma=0: expected a number in (0, 28]"),
        # A huge sigma used to allocate its kernel's 6-sigma support (24 TB for 1e12).
        (["data.augment.elastic_alpha=34", "data.augment.elastic_sigma=1e12"],
         "data.augment.elastic_sigma=1000000000000.0: expected a number in (0, 28]"),
        # These crashed with a traceback in the data module or in seed_everything, after the
        # run directory (and, in a multirun, a "None" data folder) had been created.
        (["data.data_dir=null"], "data.data_dir=null: expected the path of the data root"),
        (["data.data_dir=5"], "data.data_dir=5: expected the path of the data root"),
        (["data.seed=null"], "data.seed=null: expected an integer in [0, 4294967295]"),
        (["data=synthetic", "data.seed=1.5"], "data.seed=1.5: expected an integer in [0, 4294967295]"),
        (["seed=4294967296"], "seed=4294967296: expected an integer in [0, 4294967295]"),
        (["seed=4294967296", "data.seed=1"], "seed=4294967296: expected an integer in [0, 4294967295]"),
        (["seed=-1"], "seed=-1: expected an integer in [0, 4294967295]"),
        (["seed=true"], "seed=True: expected an integer"),
        (["data=synthetic", "data.eval_batch_size=true"], "data.eval_batch_size=True: expected null or an integer > 0"),
        (["data.tta.shift=-1"], "data.tta.shift=-1: expected an integer in [0, 8]"),
        (["data.tta.hflip=2"], "data.tta.hflip=2: expected true or false"),
        (["+data.tta.rotate=5"], "data.tta.rotate: not an argument of mlplab.data.augment.TestViews"),
        (["data.batches_per_call=0"], "data.batches_per_call=0: expected an integer > 0"),
        (["+trainer.gradient_clip_val=1.0"], "trainer.gradient_clip_val=1.0: clipping is a model setting here: use model.gradient_clip_val"),
        (["+trainer.accumulate_grad_batches=4"], "trainer.accumulate_grad_batches=4: not supported"),
        (["model.gradient_clip_val=-1"], "model.gradient_clip_val=-1: expected null or a number > 0"),
        (["model.gradient_clip_algorithm=l2"], "model.gradient_clip_algorithm='l2': expected norm or value"),
        (["model.ema_decay=1.0"], "model.ema_decay=1.0: expected null or a value in (0, 1)"),
        (["model.ema_decay=0"], "model.ema_decay=0: expected null or a value in (0, 1)"),
        (["model.mixup_alpha=-0.2"], "model.mixup_alpha=-0.2: expected a number ≥ 0"),
        (["model.members=0"], "model.members=0: expected an integer ≥ 1"),
        (["model.members=2.5"], "model.members=2.5: expected an integer ≥ 1"),
        (["model.blocks=-1"], "model.blocks=-1: expected an integer ≥ 0"),
        (["model.blocks=2", "model.hidden_sizes=[]"], "model.blocks=2: residual blocks take the last hidden layer's width"),
        (["data.augment.rotate=null"], "data.augment.rotate=null: expected degrees in [0, 180]"),
        (["data.augment.erase=null"], "data.augment.erase=null: expected a probability in [0, 1]"),
        (["data.mean=null"], "data.mean=null: expected a number"),
        (["data=synthetic", "data.separability=null"], "data.separability=null: expected a number"),
        (["data=synthetic", "data.test_size=3000"], "data.test_size=3000: must be smaller than data.n_samples=2000"),
        # The test set reports; it never chooses a checkpoint, a stopping epoch or a sweep's winner.
        (["callbacks.early_stopping.monitor=test/acc", "callbacks.early_stopping.mode=max"],
         "callbacks.early_stopping.monitor='test/acc': expected one of val/acc_best, val/acc, val/loss"),
        (["optimized_metric=test/acc"], "optimized_metric='test/acc': expected one of val/acc_best, val/acc, val/loss"),
        (["callbacks.early_stopping.monitor=val/acc"], "callbacks.early_stopping.mode='min': val/acc is better when higher: expected max"),
        (["callbacks.early_stopping.monitor=val/acc_best", "callbacks.early_stopping.mode=max",
          "callbacks.model_checkpoint.mode=min"], "callbacks.model_checkpoint.mode='min'"),
        # Passed on to the SummaryWriter: a typo was a traceback once the fit had started.
        (["+logger.tensorboard.nmae=x"], "logger.tensorboard.nmae: not an argument of "
         "lightning.pytorch.loggers.TensorBoardLogger (did you mean 'name'?)"),
        (["callbacks.model_summary.max_depth=-5"], "callbacks.model_summary.max_depth=-5: expected an integer ≥ -1"),
        # OneCycleLR sets the momentum at every step: Adagrad had none (a traceback mid-run), and
        # plain SGD trained with momentum 0.85-0.95.
        (["optimizer=adagrad", "scheduler=onecycle"], "scheduler.scheduler.cycle_momentum=True: Adagrad has no momentum "
         "for OneCycleLR to cycle; set +scheduler.scheduler.cycle_momentum=false"),
        (["optimizer=adadelta", "scheduler=onecycle"], "scheduler.scheduler.cycle_momentum=True: Adadelta has no"),
        (["optimizer=sgd", "scheduler=onecycle"], "optimizer.momentum=0.0: OneCycleLR would replace it at every step, "
         "cycling it over 0.85-0.95"),
        (["optimizer=rmsprop", "scheduler=onecycle"], "optimizer.momentum=0.0: OneCycleLR would replace it"),
        (["scheduler=cosine", "trainer.max_epochs=-1"], "trainer.max_epochs=-1: CosineAnnealingLR steps once an epoch"),
        # As the message before said: T_max was 1, and lr alternated between lr and 0 every epoch.
        (["scheduler=cosine", "trainer.max_epochs=-1", "+trainer.max_steps=100"],
         "trainer.max_epochs=-1: CosineAnnealingLR steps once an epoch and needs the number of epochs"),
        (["scheduler=onecycle", "scheduler.interval=epoch", "trainer.max_epochs=-1", "+trainer.max_steps=100"],
         "trainer.max_epochs=-1: OneCycleLR steps once an epoch"),
        (["scheduler=onecycle", "trainer.max_epochs=-1"], "trainer.max_epochs=-1: OneCycleLR needs the length"),
        (["trainer.precision=foo"], "trainer.precision='foo': expected one of"),
        (["callbacks.early_stopping=null"], "callbacks.model_checkpoint.monitor: cannot be resolved"),
        (["flush_denormal=sometimes"], "flush_denormal='sometimes': expected true or false"),
        # These read as true in `if cfg.test`: test=no tested, deterministic=yes was not deterministic.
        (["test=no"], "test='no': expected true or false"),
        (["report=maybe"], "report='maybe': expected true or false"),
        (["deterministic=yes"], "deterministic='yes': expected true, false or warn"),
        # Each failed only once training started, with a traceback and a run directory left.
        (["scheduler=plateau", "scheduler.monitor=test/acc"],
         "scheduler.monitor='test/acc': expected one of val/acc_best, val/acc, val/loss"),
        # The average's steps rounded away: bf16-true closed 0.7% of a gap that 32-bit closed 63% of.
        (["model.ema_decay=0.999", "trainer.precision=bf16-true"], "model.ema_decay=0.999: the weight average cannot "
                                                                   "move in bf16-true's 16-bit weights; use "
                                                                   "trainer.precision=bf16-mixed"),
        # One file for every kept checkpoint: the last epoch was tested as the best.
        (["callbacks.model_checkpoint.save_top_k=3"], "callbacks.model_checkpoint.save_top_k=3: every kept checkpoint "
                                                      "would be the one file best.ckpt"),
        (["scheduler=plateau", "scheduler.interval=step"], "scheduler.interval='step': ReduceLROnPlateau steps on "
                                                             "a validation metric, once a validation: expected epoch"),
        (["scheduler=plateau", "scheduler.monitor=train/loss"], "scheduler.monitor='train/loss': expected one of"),
        (["scheduler=plateau", "scheduler.monitor=val/acc"],
         "scheduler.scheduler.mode='min': val/acc is better when higher: expected max"),
        (["scheduler=plateau", "scheduler.monitor=val/acc", "~scheduler.scheduler.mode"],
         "scheduler.scheduler.mode='min': val/acc is better when higher: expected max"),
        (["trainer.limit_val_batches=0"], "trainer.limit_val_batches=0: expected > 0"),
        (["trainer.limit_train_batches=0.0"], "trainer.limit_train_batches=0: expected > 0 (0 trains nothing)"),
        # Lightning refused these once the Trainer was built, in 7-9 lines and a failed run folder;
        # check_val_every_n_epoch=0 divided by zero in the first epoch, with a traceback.
        (["trainer.strategy=dpp"], "trainer.strategy='dpp': not a strategy Lightning knows (e.g. auto, ddp); did you "
                                   "mean ddp?"),
        (["trainer.accelerator=cpux"], "trainer.accelerator='cpux': expected one of auto, cpu, cuda, gpu, mps, tpu; "
                                       "did you mean cpu?"),
        (["trainer.devices=0"], "trainer.devices=0: expected auto, a count ≥ 1 (-1: all), or a list of device indices"),
        (["trainer.devices=[]"], "trainer.devices=[]: expected auto"),
        (["trainer.num_nodes=0"], "trainer.num_nodes=0: expected an integer ≥ 1"),
        (["trainer.limit_train_batches=-1"], "trainer.limit_train_batches=-1: expected a fraction in [0, 1] or a "
                                             "number of batches ≥ 1"),
        (["+trainer.limit_test_batches=1.5"], "trainer.limit_test_batches=1.5: expected a fraction in [0, 1]"),
        (["trainer.check_val_every_n_epoch=0"], "trainer.check_val_every_n_epoch=0: expected an integer ≥ 1"),
        (["+trainer.max_steps=0"], "trainer.max_steps=0: expected -1 (no limit) or ≥ 1 (0 trains nothing)"),
        (["trainer.min_epochs=5", "trainer.max_epochs=3"], "trainer.min_epochs=5: expected ≤ trainer.max_epochs (3)"),
        (["+trainer.min_steps=50", "+trainer.max_steps=20"], "trainer.min_steps=50: expected ≤ trainer.max_steps (20)"),
        (["+trainer.val_check_interval=0"], "trainer.val_check_interval=0: expected a fraction of an epoch in (0, 1]"),
        # A traceback mid-run and a failed run folder each, or (fused=maybe) silently fused.
        (["scheduler=cosine", "+scheduler.foo=1"], "scheduler.foo=1: not a key of the scheduler group"),
        (["+scheduler.interval=step"], "scheduler.interval='step': has no effect without a schedule"),
        (["scheduler=cosine", "+scheduler.frequency=0"], "scheduler.frequency=0: expected an integer ≥ 1"),
        (["scheduler=onecycle", "scheduler.scheduler.max_lr=abc"], "scheduler.scheduler.max_lr='abc': expected a "
                                                                  "number > 0"),
        (["scheduler=onecycle", "scheduler.scheduler.anneal_strategy=lin"],
         "scheduler.scheduler.anneal_strategy='lin': expected cos or linear"),
        (["optimizer=momentum", "optimizer.momentum=0", "optimizer.nesterov=true"],
         "optimizer.nesterov=True: needs optimizer.momentum > 0 and optimizer.dampening=0"),
        (["optimizer.fused=maybe"], "optimizer.fused='maybe': expected true or false"),
        # train() passes its own: runs went on with checkpoints, loggers and bars as before.
        (["+trainer.enable_checkpointing=false"], "trainer.enable_checkpointing=False: checkpointing follows "
                                                  "callbacks.model_checkpoint (=null: no checkpoints)"),
        (["+trainer.logger=false"], "trainer.logger=False: loggers are the logger group: logger=none"),
        (["callbacks.histograms.every_n_epochs=-1"], "callbacks.histograms.every_n_epochs=-1: expected an integer ≥ 0 "
                                                     "(0: never)"),
        (["model.hidden_sizes=[8]", "model.activation=[relu,tanh]"], "model.activation=['relu', 'tanh']: a per-layer "
                                                                       "list needs 1 entry (one per hidden layer)"),
    ],
)
def test_bad_value_names_key_value_and_allowed(make_cfg, overrides, message) -> None:
    cfg = make_cfg(overrides)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("seed", ["-1", "true", "4294967296"])
def test_a_bad_seed_is_named_as_typed_not_as_the_data_seed_that_follows_it(make_cfg, seed: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate(make_cfg([f"seed={seed}"]))
    assert str(err.value).startswith("seed="), str(err.value)


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["deterministic=warn", "test=false", "report=false"],
        ["optimizer=sgd", "scheduler=cosine"],
        ["optimizer=momentum", "scheduler=onecycle"],
        ["+logger.tensorboard.flush_secs=5", "callbacks.model_summary.max_depth=-1"],
        ["optimizer=sgd", "scheduler=onecycle", "+scheduler.scheduler.cycle_momentum=false"],
        ["optimizer=adagrad", "scheduler=onecycle", "+scheduler.scheduler.cycle_momentum=false"],
        ["optimizer=rmsprop", "optimizer.momentum=0.5", "scheduler=onecycle"],
        ["scheduler=cosine", "scheduler.interval=step", "trainer.max_epochs=-1", "+trainer.max_steps=100"],
        ["optimizer=adamw", "scheduler=step"],
        ["optimizer=rmsprop", "scheduler=plateau"],
        ["optimizer=adagrad"],
        ["optimizer=adadelta"],
        ["data=fashion", "data.augment.hflip=true", "data.augment.shift=2", "data.augment.rotate=10",
         "data.augment.elastic_alpha=30", "model.gradient_clip_val=1.0", "data.batches_per_call=1"],
        ["data=fashion", "model.activation=[relu,tanh]", "model.dropout=[0.2,0.1]", "model.norm=layernorm"],
        ["data=synthetic", "model.hidden_sizes=[13,8]", "model.activation=[relu,sigmoid]", "model.bias=false"],
        ["trainer=debug", "callbacks=none", "logger=csv"],
        ["logger=none", "model.max_norm=3.0", "model.init=normal"],
    ],
)
def test_shipped_options_validate(make_cfg, overrides) -> None:
    validate(make_cfg(overrides))


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd", "momentum", "adagrad"])
def test_optimizers_with_a_fused_step_use_it(make_cfg, name) -> None:
    # The fused step is most of the speed of a wide MLP on a CPU (docs/speed.md); losing the
    # key from a config would not fail anything else.
    import torch
    from omegaconf import OmegaConf

    from mlplab.models.classifier import Classifier

    cfg = make_cfg([f"optimizer={name}"])
    model = Classifier(784, 10, hidden_sizes=[8], optimizer=OmegaConf.to_container(cfg.optimizer))
    optimizer = model.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    assert isinstance(optimizer, torch.optim.Optimizer) and optimizer.defaults["fused"] is True


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(), reason="this machine has a GPU")
def test_an_accelerator_this_machine_lacks_is_refused_unless_the_run_is_elsewhere(make_cfg) -> None:
    cfg = make_cfg(["trainer=gpu"])
    with pytest.raises(ConfigError, match=r"^trainer.accelerator='gpu': no such device on this machine"):
        validate(cfg)
    validate(cfg, here=False)  # a SLURM sweep's jobs, checked on the login node, run on GPU nodes
