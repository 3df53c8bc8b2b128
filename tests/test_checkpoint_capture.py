"""``dynstudy capture --checkpoints``: checkpoints made by the real libraries (plain ``torch.save`` of a tiny_cnn,
a Lightning fit with ``ModelCheckpoint(save_top_k=-1)``, a Hugging Face Trainer saving every epoch) become runs
that ``analyze`` and ``report`` treat like any other, with the checkpoints' own records as train_metrics; names
that cannot be ordered and a checkpoint of another model are refused before anything is written."""
from __future__ import annotations

import json
import os

import duckdb
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dynstudy.jobs.data.in_memory import load_dataset, normalize
from dynstudy.jobs.models.zoo import build_model
from dynstudy.store_contract.files import read_run_row
from dynstudy.study.cli import main

EPOCHS, BATCH, PROBE = 3, 128, 64


def digits():
    """The digits splits as tiny_cnn takes them (normalised as the probe is)."""
    data = load_dataset("digits")
    return ((normalize(data.train.x, data.mean, data.std), data.train.y),
            (normalize(data.val.x, data.mean, data.std), data.val.y))


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return build_model("tiny_cnn", 10, in_chans=1, image_size=8)


def rows(store, sql):
    return duckdb.connect().sql(sql.replace("STORE", str(store))).fetchall()


def capture(store, folder, run_id, *extra):
    return main(["capture", "--checkpoints", str(folder), "--model", "tiny_cnn", "--dataset", "digits",
                 "--store", str(store), "--run-id", run_id, "--probe-size", str(PROBE),
                 "--channels-per-stage", "8", *extra])


def save_torch_checkpoints(folder) -> list[float]:
    """A plain loop saving the untrained net (a bare state dict) and each epoch ({"model", "optimizer",
    "val_acc", "val_loss"}); returns the saved val_acc."""
    folder.mkdir()
    (xt, yt), (xv, yv) = digits()
    model = tiny_cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    torch.save(model.state_dict(), folder / "ckpt_epoch_000.pt")
    accs, step = [], 0
    for epoch in range(1, EPOCHS + 1):
        model.train()
        for i in range(0, len(yt), BATCH):
            step += 1
            opt.zero_grad()
            F.cross_entropy(model(xt[i:i + BATCH]), yt[i:i + BATCH]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            logits = model(xv)
        accs.append((logits.argmax(1) == yv).float().mean().item())
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "val_acc": accs[-1], "step": step,
                    "val_loss": F.cross_entropy(logits, yv).item()}, folder / f"ckpt_epoch_{epoch:03d}.pt")
    return accs


def lightning_checkpoints(folder) -> None:
    """A real Lightning fit of tiny_cnn, every epoch checkpointed (``epoch=N-step=M.ckpt``)."""
    from dynstudy.jobs.models.tv_compat import ensure_torchvision

    ensure_torchvision()
    pl = pytest.importorskip("pytorch_lightning")
    from pytorch_lightning.callbacks import ModelCheckpoint
    from torch.utils.data import DataLoader, TensorDataset

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = tiny_cnn()

        def training_step(self, batch, batch_idx):
            return F.cross_entropy(self.model(batch[0]), batch[1])

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", F.cross_entropy(self.model(batch[0]), batch[1]))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)

    (xt, yt), (xv, yv) = digits()
    ckpt = ModelCheckpoint(dirpath=folder, save_top_k=-1, monitor="val_loss")
    trainer = pl.Trainer(max_epochs=EPOCHS, accelerator="cpu", devices=1, callbacks=[ckpt], logger=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(Module(), DataLoader(TensorDataset(xt, yt), batch_size=BATCH, shuffle=True),
                DataLoader(TensorDataset(xv, yv), batch_size=BATCH))


def hf_checkpoints(folder) -> None:
    """A real Hugging Face Trainer run of tiny_cnn saving a checkpoint-<step> folder each epoch."""
    import numpy as np

    from dynstudy.jobs.models.tv_compat import ensure_torchvision

    ensure_torchvision()
    transformers = pytest.importorskip("transformers")

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = tiny_cnn()

        def forward(self, pixel_values, labels=None):
            logits = self.net(pixel_values)
            return {"loss": F.cross_entropy(logits, labels), "logits": logits}

    class Pairs(torch.utils.data.Dataset):
        def __init__(self, x, y):
            self.x, self.y = x, y

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            return {"pixel_values": self.x[i], "labels": self.y[i]}

    def accuracy(pred):
        return {"accuracy": float((np.argmax(pred.predictions, axis=1) == pred.label_ids).mean())}

    (xt, yt), (xv, yv) = digits()
    args = transformers.TrainingArguments(str(folder), num_train_epochs=EPOCHS, per_device_train_batch_size=BATCH,
                                          per_device_eval_batch_size=BATCH, learning_rate=1e-2, eval_strategy="epoch",
                                          save_strategy="epoch", logging_strategy="epoch", report_to="none",
                                          use_cpu=True, seed=0, disable_tqdm=True, dataloader_num_workers=0)
    transformers.Trainer(Classifier(), args, train_dataset=Pairs(xt, yt), eval_dataset=Pairs(xv, yv),
                         compute_metrics=accuracy).train()


def assert_capture_is_the_checkpoints_forward(store, path, run_id, capture_no) -> None:
    """The capture's last-stage values are the checkpoint's own forward pass of the first P validation images."""
    model = tiny_cnn()
    model.load_state_dict(torch.load(path)["model"])
    model.eval()
    pooled = {}
    model.stage4.register_forward_hook(lambda module, args, out: pooled.update(v=out.mean(dim=(2, 3))))
    with torch.no_grad():
        model(digits()[1][0][:PROBE])
    stored = rows(store, f"SELECT sample, channel, value FROM read_parquet('STORE/activations/run_id={run_id}/"
                         f"*.parquet', hive_partitioning=false) WHERE capture = {capture_no} AND stage = 'stage4'")
    assert len(stored) == PROBE * 8
    assert [v for _, _, v in stored] == pytest.approx([pooled["v"][s, c].item() for s, c, _ in stored], abs=1e-4)


def test_checkpoints_of_three_libraries_are_runs_that_analyze_and_report_read(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    store = tmp_path / "store"
    accs = save_torch_checkpoints(tmp_path / "plain")
    lightning_checkpoints(tmp_path / "pl")
    hf_checkpoints(tmp_path / "hf")
    assert capture(store, tmp_path / "plain", "plain") == 0
    assert capture(store, tmp_path / "pl", "lightning") == 0
    assert capture(store, tmp_path / "hf", "hf") == 0
    assert "train_metrics from the checkpoints: lr, val_acc, val_loss" in capsys.readouterr().out

    kinds = rows(store, "SELECT run_id, capture, kind, epoch FROM read_parquet('STORE/activations/*/*.parquet', "
                        "hive_partitioning=false) GROUP BY ALL ORDER BY ALL")
    epochs = {run: [(c, k, e) for r, c, k, e in kinds if r == run] for run in ("plain", "lightning", "hf")}
    assert epochs["plain"] == [(0, "init", 0), (1, "epoch", 1), (2, "epoch", 2), (3, "epoch", 3)]
    assert epochs["lightning"] == epochs["hf"] == [(0, "epoch", 1), (1, "epoch", 2), (2, "epoch", 3)]

    assert rows(store, "SELECT step FROM read_parquet('STORE/train_metrics/run_id=plain/*.parquet') ORDER BY 1"
                ) == [(12,), (24,), (36,)]
    assert_capture_is_the_checkpoints_forward(store, tmp_path / "plain" / "ckpt_epoch_003.pt", "plain", 3)
    metrics = rows(store, "SELECT run_id, epoch, val_acc, val_loss IS NOT NULL, lr IS NOT NULL FROM "
                          "read_parquet('STORE/train_metrics/*/*.parquet', hive_partitioning=false) ORDER BY ALL")
    by_run = {run: [m[1:] for m in metrics if m[0] == run] for run in ("plain", "lightning", "hf")}
    assert [m[1] for m in by_run["plain"]] == pytest.approx(accs)  # the checkpoints' own records
    assert [m[0] for m in by_run["lightning"]] == [1, 2, 3]
    assert all(m[1] is None and m[2] and m[3] for m in by_run["lightning"])  # no val_acc saved: left empty
    assert all(m[1] is not None and m[2] and m[3] for m in by_run["hf"])
    row = read_run_row(str(store), "hf")
    assert (row["status"], row["study"], row["model"], row["dataset"]) == ("finished", "checkpoints", "tiny_cnn",
                                                                           "digits")

    assert main(["analyze", "--store", str(store), "--workers", "1"]) == 0
    analysed = rows(store, "SELECT run_id FROM read_parquet('STORE/run_summary/*/*.parquet', "
                           "hive_partitioning=false) ORDER BY 1")
    assert analysed == [("hf",), ("lightning",), ("plain",)]
    best = dict(rows(store, "SELECT run_id, best_epoch FROM read_parquet('STORE/run_summary/*/*.parquet', "
                            "hive_partitioning=false)"))
    assert best["lightning"] is None and best["plain"] == 1 + accs.index(max(accs))  # none without val_acc
    assert main(["report", "--store", str(store)]) == 0
    assert os.path.getsize(store / "report.html") > 0


def empty_checkpoints(folder, names):
    """Empty checkpoint files, and Hugging Face folders for names without a suffix (the order is refused
    before anything is read)."""
    for name in names:
        path = folder / name
        if path.suffix:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        else:
            path.mkdir(parents=True)
            (path / "model.safetensors").touch()
    return folder


def test_unorderable_names_and_a_checkpoint_of_another_model_are_refused_before_any_write(tmp_path, capsys):
    folder, store = tmp_path / "ckpts", tmp_path / "store"
    folder.mkdir()
    torch.save(tiny_cnn().state_dict(), folder / "ckpt_epoch_001.pt")
    torch.save(tiny_cnn().state_dict(), folder / "final.pt")
    assert capture(store, folder, "r") == 2
    err = capsys.readouterr().err
    assert "final.pt" in err and "--order" in err

    for names, said in ((["epoch=1.ckpt", "checkpoint-5"], "mix epochs and steps"),
                        (["epoch=1.ckpt", "ckpt_epoch_001.pt"], "carry the same epoch number")):
        assert capture(store, empty_checkpoints(tmp_path / names[1], names), "r") == 2
        err = capsys.readouterr().err
        assert said in err and names[0] in err and names[1] in err and "--order" in err
    assert capture(store, folder, "r", "--order", "ckpt_epoch_001.pt,epoch=9.pt") == 2
    assert "--order names epoch=9.pt" in capsys.readouterr().err

    torch.manual_seed(0)
    other = build_model("tiny_resnet", 10, in_chans=1, image_size=8).state_dict()
    torch.save({"state_dict": {f"model.{k}": v for k, v in other.items()}}, folder / "final.pt")
    assert capture(store, folder, "r", "--order", "ckpt_epoch_001.pt,final.pt") == 2
    err = capsys.readouterr().err
    first_bad = next(k for k, v in tiny_cnn().state_dict().items() if k not in other or other[k].shape != v.shape)
    assert "final.pt does not fit the model" in err and repr(first_bad) in err
    assert not store.exists()


def test_save_pretrained_folders_load_into_their_transformers_architecture(tmp_path):
    from dynstudy.jobs.models.tv_compat import ensure_torchvision

    ensure_torchvision()
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ResNetConfig(num_channels=1, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                       num_labels=10, downsample_in_first_stage=False)
    model = transformers.ResNetForImageClassification(config)
    (xt, yt), _ = digits()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    folder, store = tmp_path / "pretrained", tmp_path / "store"
    model.save_pretrained(folder / "epoch_000")
    for epoch in (1, 2):
        for i in range(0, len(yt), BATCH):
            opt.zero_grad()
            model(pixel_values=xt[i:i + BATCH], labels=yt[i:i + BATCH]).loss.backward()
            opt.step()
        model.save_pretrained(folder / f"epoch_{epoch:03d}")
    assert main(["capture", "--checkpoints", str(folder), "--model", "hf", "--dataset", "digits", "--store",
                 str(store), "--run-id", "hf-resnet", "--probe-size", str(PROBE), "--channels-per-stage", "4"]) == 0
    assert rows(store, "SELECT DISTINCT capture, kind, epoch FROM read_parquet('STORE/activations/*/*.parquet', "
                       "hive_partitioning=false) ORDER BY 1") == [(0, "init", 0), (1, "epoch", 1), (2, "epoch", 2)]
    row = read_run_row(str(store), "hf-resnet")
    assert (row["status"], row["model"]) == ("finished", "ResNetForImageClassification")


def test_checkpoints_named_by_step_are_epochs_in_training_order(tmp_path, capsys):
    folder, store = tmp_path / "steps", tmp_path / "store"
    folder.mkdir()
    model = tiny_cnn()
    for step in (100, 20, 5):  # saved out of order on purpose: the names order them
        with torch.no_grad():
            model.head.bias += 1.0
        torch.save({"state_dict": model.state_dict(), "global_step": step}, folder / f"model_step{step}.pt")
    assert capture(store, folder, "by-step") == 0
    assert "3 checkpoints as epochs 1..3 (numbered in order)" in capsys.readouterr().out
    assert rows(store, "SELECT DISTINCT epoch, step FROM read_parquet('STORE/activations/*/*.parquet', "
                       "hive_partitioning=false) ORDER BY 1") == [(1, 5), (2, 20), (3, 100)]
    config = json.loads(read_run_row(str(store), "by-step")["config"])["user_config"]
    assert config["epoch_numbering"] == "in order"
    assert [f["name"] for f in config["files"]] == ["model_step5.pt", "model_step20.pt", "model_step100.pt"]
