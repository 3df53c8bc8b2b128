"""A PyTorch Lightning ``Callback`` that records a ``Trainer.fit`` through a
:class:`~dynstudy.jobs.capture.recorder.Recorder`.

Needs the ``lightning`` extra (``pip install 'dynstudy[lightning]'``)::

    from dynstudy.jobs.capture.lightning import RecorderCallback
    trainer = pl.Trainer(max_epochs=10, callbacks=[RecorderCallback("store", run_id="r0", probe=(x, y),
                                                                    stages=["net.layer1", "net.layer2"])])
    trainer.fit(module, train_loader, val_loader)

The recorder captures the LightningModule (stage names are its ``named_modules()``): the untrained network at
the fit's start, every ``every_n_steps`` optimiser steps when given, and after each epoch's validation, where
it also logs the epoch (train_loss: the mean of the epoch's training-step losses; val_loss and val_acc: the
logged metrics named by ``val_loss`` and ``val_acc``; the first optimiser's lr). It does so before
``ModelCheckpoint`` saves (Lightning runs checkpoint callbacks last), and its state is the callback's state in
every checkpoint, so ``trainer.fit(..., ckpt_path=...)`` resumes with every capture once. ``fit``'s end
finishes the run (stop reason ``early_stopping`` when a callback stopped it, else ``max_epochs``); an exception
marks it failed.
"""
from __future__ import annotations

from dynstudy.jobs.models.tv_compat import ensure_torchvision

ensure_torchvision()  # Lightning imports torchvision (through torchmetrics)

import pytorch_lightning as pl  # noqa: E402

from dynstudy.jobs.capture.recorder import Recorder  # noqa: E402


class RecorderCallback(pl.Callback):
    """Records a Lightning fit into a dynstudy store.

    Parameters
    ----------
    store, run_id, probe, stages, seed, config : as for :class:`~dynstudy.jobs.capture.recorder.Recorder`; the
        model is the LightningModule being fitted.
    every_n_steps : a step capture every that many optimiser steps (None: none).
    val_loss, val_acc : the names the module logs its validation loss and accuracy under.
    **recorder_kw : the recorder's other keywords (model_name, dataset, optimizer, capture, analysis, ...).
    """

    def __init__(self, store: str, run_id: str, probe, stages=None, seed: int = 0, config: dict | None = None, *,
                 every_n_steps: int | None = None, val_loss: str = "val_loss", val_acc: str = "val_acc",
                 **recorder_kw):
        self.args = dict(store=store, run_id=run_id, probe=probe, stages=stages, seed=seed, config=config,
                         **recorder_kw)
        self.every_n_steps, self.names = every_n_steps, {"val_loss": val_loss, "val_acc": val_acc}
        self.recorder: Recorder | None = None
        self.restored: dict | None = None
        self.losses: list[float] = []

    @property
    def state_key(self) -> str:
        return f"RecorderCallback[{self.args['run_id']}]"

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit" and self.recorder is None:
            self.recorder = Recorder(model=pl_module, **self.args)

    def load_state_dict(self, state_dict: dict) -> None:
        if "recorder" in state_dict:  # a checkpoint saved before the recorder existed holds none
            self.restored = state_dict["recorder"]
            self.recorder.load_state_dict(self.restored)

    def state_dict(self) -> dict:
        return {"recorder": self.recorder.state_dict()} if self.recorder is not None else {}

    def on_fit_start(self, trainer, pl_module) -> None:
        if self.restored is None:
            self.recorder.capture(epoch=0)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:
            self.losses.append(float(loss))
        step = trainer.global_step
        if self.every_n_steps and step and step % self.every_n_steps == 0 and \
                step > self.recorder.last_step_captured:
            self.recorder.capture(step=step)

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.record_epoch(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.record_epoch(trainer)  # an epoch without validation

    def record_epoch(self, trainer) -> None:
        """Capture and log the epoch that just ended, once."""
        epoch = trainer.current_epoch + 1
        if epoch <= self.recorder.last_captured_epoch:
            return
        self.recorder.capture(epoch=epoch, step=trainer.global_step)
        metrics = {key: trainer.callback_metrics.get(name) for key, name in self.names.items()}
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None
        self.recorder.log(epoch=epoch, step=trainer.global_step, lr=lr,
                          train_loss=sum(self.losses) / len(self.losses) if self.losses else None,
                          **{k: None if v is None else float(v) for k, v in metrics.items()})

    def on_fit_end(self, trainer, pl_module) -> None:
        stopped = trainer.should_stop and trainer.current_epoch + 1 < (trainer.max_epochs or 0)
        self.recorder.finish("finished", "early_stopping" if stopped else "max_epochs")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self.recorder is not None:
            self.recorder.fail(f"{type(exception).__name__}: {exception}")
