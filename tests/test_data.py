"""In-memory datasets, batching, normalisation and batched augmentation."""
from __future__ import annotations

import pickle
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dynstudy.jobs.data.augment import AUGMENTS, augment_batch
from dynstudy.jobs.data.in_memory import (
    CIFAR_STATS,
    DATASET_NAMES,
    DatasetBundle,
    Split,
    channel_stats,
    iterate_batches,
    load_dataset,
    normalize,
)
from tests.cifar_files import CIFAR10_NAMES, write_cifar10, write_cifar100


def _same(a: DatasetBundle, b: DatasetBundle) -> None:
    for s, t in ((a.train, b.train), (a.val, b.val)):
        assert torch.equal(s.x, t.x) and torch.equal(s.y, t.y)
    assert (a.mean, a.std, a.class_names) == (b.mean, b.std, b.class_names)


# --------------------------------------------------------------------------- digits / synthetic


def test_digits_shapes_split_and_determinism():
    a = load_dataset("digits")
    assert (a.num_classes, a.in_chans, a.image_size, a.augment) == (10, 1, 8, "none")
    assert a.train.x.shape == (1437, 1, 8, 8) and a.val.x.shape == (360, 1, 8, 8)
    assert a.train.x.dtype == torch.uint8 and a.val.y.dtype == torch.int64
    assert int(a.train.x.max()) == 255 and int(a.train.x.min()) == 0
    counts = torch.bincount(a.val.y, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~20% of each class
    _same(a, load_dataset("digits"))
    assert a.mean == channel_stats(a.train.x)[0] and 0.2 < a.std[0] < 0.5
    small = load_dataset("digits", n_train=100, n_val=50)
    assert torch.equal(small.val.x, a.val.x[:50]) and torch.equal(small.train.y, a.train.y[:100])


def test_synthetic_deterministic_balanced_and_prefix_stable():
    a = load_dataset("synthetic")
    assert a.train.x.shape == (2000, 3, 16, 16) and a.val.x.shape == (512, 3, 16, 16)
    assert (a.num_classes, a.in_chans, a.augment) == (10, 3, "flip") and a.train.x.dtype == torch.uint8
    _same(a, load_dataset("synthetic"))
    assert torch.bincount(a.train.y, minlength=10).tolist() == [200] * 10
    val_counts = torch.bincount(a.val.y, minlength=10)
    assert val_counts.min() >= 45 and val_counts.max() <= 58
    small = load_dataset("synthetic", n_train=300, n_val=128)
    assert torch.equal(small.val.x, a.val.x[:128]) and torch.equal(small.train.y, a.train.y[:300])
    assert not torch.equal(a.train.x[:512], a.val.x)  # separate streams for train and val


def test_synthetic_learnable_but_not_trivial():
    from sklearn.linear_model import LogisticRegression

    a = load_dataset("synthetic")
    flat = lambda s: s.x.reshape(len(s), -1).float().numpy() / 255.0  # noqa: E731
    clf = LogisticRegression(C=0.01, max_iter=500).fit(flat(a.train), a.train.y.numpy())
    acc = clf.score(flat(a.val), a.val.y.numpy())
    assert 0.35 < acc < 0.9, acc  # chance is 0.1


@pytest.mark.parametrize("kwargs, match", [
    ({"name": "mnist"}, "unknown"),
    ({"name": "digits", "n_train": 0}, "n_train=0"),
    ({"name": "digits", "n_val": 361}, "n_val=361"),
    ({"name": "digits", "image_size": 32}, "image_size=32"),
    ({"name": "cifar10", "image_size": 64, "root": "/x"}, "image_size=64"),
    ({"name": "cifar10"}, "needs root"),
])
def test_bad_arguments_are_named(kwargs, match):
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=match):
        load_dataset(name, **kwargs)


# --------------------------------------------------------------------------- CIFAR


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    return root, write_cifar10(root), write_cifar100(root)


def test_cifar10_round_trip(cifar_root):
    root, c10, _ = cifar_root
    b = load_dataset("cifar10", str(root))
    assert b.train.x.shape == (200, 3, 32, 32) and b.val.x.shape == (60, 3, 32, 32)
    assert np.array_equal(b.train.x.numpy(), c10["train_x"]) and np.array_equal(b.val.x.numpy(), c10["test_x"])
    assert np.array_equal(b.train.y.numpy(), c10["train_y"]) and b.val.y.dtype == torch.int64
    assert b.class_names == CIFAR10_NAMES and b.augment == "flip" and b.num_classes == 10
    assert (b.mean, b.std) == CIFAR_STATS["cifar10"]
    _same(b, load_dataset("cifar10", root))
    assert torch.equal(load_dataset("cifar10", root, n_val=7).val.x, b.val.x[:7])


def test_cifar100_round_trip(cifar_root):
    root, _, c100 = cifar_root
    b = load_dataset("cifar100", root)
    assert b.train.x.shape == (200, 3, 32, 32) and b.val.x.shape == (100, 3, 32, 32)
    assert np.array_equal(b.train.x.numpy(), c100["train_x"]) and np.array_equal(b.val.y.numpy(), c100["test_y"])
    assert (b.num_classes, b.augment, b.class_names[3]) == (100, "flip_crop", "fine_03")


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_matches_torchvision_reader(cifar_root, monkeypatch, name):
    """torchvision itself reads the generated files (md5 check bypassed) to the same arrays."""
    from dynstudy.jobs.models.tv_compat import ensure_torchvision

    ensure_torchvision()
    import torchvision.datasets.cifar as tvc

    cls = tvc.CIFAR10 if name == "cifar10" else tvc.CIFAR100
    monkeypatch.setattr(cls, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tvc, "check_integrity", lambda *a, **k: True)
    root = cifar_root[0]
    ours = load_dataset(name, root)
    for train, split in ((True, ours.train), (False, ours.val)):
        tv = cls(str(root), train=train)
        assert np.array_equal(tv.data, split.x.permute(0, 2, 3, 1).numpy())
        assert tv.targets == split.y.tolist() and tv.classes == ours.class_names


def test_cifar_missing_root_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope/cifar-10-batches-py.*download=True"):
        load_dataset("cifar10", tmp_path / "nope")
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match=r"data_batch_3 is missing"):
        load_dataset("cifar10", tmp_path)


def test_cifar_corrupt_pickles(tmp_path):
    write_cifar100(tmp_path, n_train=20, n_test=10)
    train = tmp_path / "cifar-100-python" / "train"
    train.write_bytes(train.read_bytes()[:5000])  # truncated download
    with pytest.raises(ValueError, match=r"cifar-100-python/train is corrupt.*point root"):
        load_dataset("cifar100", tmp_path)
    with open(train, "wb") as f:
        pickle.dump({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}, f)  # a CIFAR-10 batch
    with pytest.raises(ValueError, match=r"lacks \['fine_labels'\]"):
        load_dataset("cifar100", tmp_path)
    with open(train, "wb") as f:
        pickle.dump({"data": np.zeros((2, 3072), np.uint8), "fine_labels": [0, 100]}, f)
    with pytest.raises(ValueError, match=r"labels in 0..99"):
        load_dataset("cifar100", tmp_path)


def test_cifar_download_failure_is_explained(tmp_path, monkeypatch):
    from dynstudy.jobs.models.tv_compat import ensure_torchvision

    ensure_torchvision()
    import torchvision.datasets.cifar as tvc

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(tvc, "download_and_extract_archive", offline)
    with pytest.raises(RuntimeError, match=r"downloading cifar10 to .* failed.*download=False"):
        load_dataset("cifar10", tmp_path, download=True)


# --------------------------------------------------------------------------- imagefolder

COLOURS = {"cat": (200, 30, 30), "ant": (30, 200, 30), "bee": (30, 30, 200)}


def _write_folder(root, classes=("ant", "bee", "cat"), per_class=4):
    for split in ("train", "val"):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                size = (40 + 7 * i, 30) if i % 2 else (30, 50)  # landscape and portrait
                Image.new("RGB", size, COLOURS[c]).save(d / f"{i}.png")
    return root


def test_imagefolder_loads_sorted_classes(tmp_path):
    root = _write_folder(tmp_path)
    (root / "train" / "ant" / "notes.txt").write_text("not an image")
    Image.new("L", (20, 20), 128).save(root / "val" / "bee" / "grey.png")  # converted to RGB
    b = load_dataset("imagefolder", root, image_size=16)
    assert b.class_names == ["ant", "bee", "cat"] and (b.num_classes, b.in_chans, b.image_size) == (3, 3, 16)
    assert b.train.x.shape == (12, 3, 16, 16) and b.val.x.shape == (13, 3, 16, 16)
    for i in range(len(b.train)):
        colour = COLOURS[b.class_names[int(b.train.y[i])]]
        assert b.train.x[i, :, 8, 8].tolist() == list(colour)
    assert len(set(b.train.y[:3].tolist())) > 1  # fixed shuffled order mixes the classes
    _same(b, load_dataset("imagefolder", root, image_size=16))
    assert torch.equal(load_dataset("imagefolder", root, image_size=16, n_train=5).train.x, b.train.x[:5])


def test_imagefolder_centre_crop_is_exact(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (10, 20, 3), dtype=np.uint8)  # H 10, W 20
    for split in ("train", "val"):
        (tmp_path / split / "a").mkdir(parents=True)
        Image.fromarray(pixels).save(tmp_path / split / "a" / "x.png")
    b = load_dataset("imagefolder", tmp_path, image_size=10)  # shorter side already 10: crop only
    assert np.array_equal(b.val.x[0].numpy(), pixels[:, 5:15].transpose(2, 0, 1))


def test_imagefolder_errors(tmp_path):
    root = _write_folder(tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("imagefolder", tmp_path / "missing")
    with pytest.raises(ValueError, match="download=True is not supported"):
        load_dataset("imagefolder", root, download=True)
    (root / "val" / "cat" / "0.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"cannot read image .*val/cat/0.png"):
        load_dataset("imagefolder", root)
    mismatched = _write_folder(tmp_path / "b")
    (mismatched / "val" / "dog").mkdir()
    Image.new("RGB", (8, 8)).save(mismatched / "val" / "dog" / "0.png")
    with pytest.raises(ValueError, match=r"only in val: \['dog'\]"):
        load_dataset("imagefolder", mismatched)
    (mismatched / "train" / "dog").mkdir()
    with pytest.raises(ValueError, match=r"train/dog holds no images"):
        load_dataset("imagefolder", mismatched)
    no_val = tmp_path / "c"
    (no_val / "train" / "x").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(no_val / "train" / "x" / "0.png")
    with pytest.raises(FileNotFoundError, match=r"c/val does not exist"):
        load_dataset("imagefolder", no_val)


# --------------------------------------------------------------------------- batching / normalisation


def test_iterate_batches_covers_every_index_once():
    split = Split(torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1), torch.arange(10))
    plain = list(iterate_batches(split, 4, shuffle=False, generator=None))
    assert [len(y) for _, y in plain] == [4, 4, 2] and torch.cat([y for _, y in plain]).tolist() == list(range(10))
    run = lambda seed: torch.cat([y for _, y in iterate_batches(  # noqa: E731
        split, 3, shuffle=True, generator=torch.Generator().manual_seed(seed))])
    assert sorted(run(1).tolist()) == list(range(10)) and torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))
    batches = list(iterate_batches(split, 3, shuffle=True, generator=torch.Generator().manual_seed(0), drop_last=True))
    assert [len(y) for _, y in batches] == [3, 3, 3]
    assert all(torch.equal(x.view(-1).long(), y) for x, y in batches)
    with pytest.raises(ValueError, match="batch_size=0"):
        next(iterate_batches(split, 0, shuffle=False, generator=None))
    with pytest.raises(ValueError, match="needs generator"):
        next(iterate_batches(split, 2, shuffle=True, generator=None))


def test_normalize():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1).repeat(2, 1, 2, 2)
    out = normalize(x, (0.0, 0.2, 0.5), (1.0, 0.5, 0.25))
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([0.0, 0.0, 2.0]))
    with pytest.raises(TypeError, match="uint8"):
        normalize(out, (0.0,) * 3, (1.0,) * 3)
    with pytest.raises(ValueError, match="1 means"):
        normalize(x, (0.5,), (0.5,))


# --------------------------------------------------------------------------- augmentation


def _batch(dtype=torch.float32, n=64):
    g = torch.Generator().manual_seed(123)
    x = torch.randint(0, 256, (n, 3, 12, 10), generator=g, dtype=torch.uint8)
    return x if dtype == torch.uint8 else x.to(dtype)


def test_augment_none_is_identity():
    x = _batch()
    assert augment_batch(x, "none", None) is x and AUGMENTS == ("none", "flip", "flip_crop")


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_flip_flips_exactly_the_selected_images(dtype):
    x = _batch(dtype)
    out = augment_batch(x, "flip", torch.Generator().manual_seed(0))
    flipped = [bool(torch.equal(out[i], torch.flip(x[i], dims=[2]))) for i in range(len(x))]
    kept = [bool(torch.equal(out[i], x[i])) for i in range(len(x))]
    assert all(f != k for f, k in zip(flipped, kept))  # each image is exactly one of the two
    assert 16 < sum(flipped) < 48 and out.dtype == dtype


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_flip_crop_is_a_slice_of_the_reflect_padded_image(dtype):
    x = _batch(dtype)
    out = augment_batch(x, "flip_crop", torch.Generator().manual_seed(5))
    assert out.shape == x.shape and out.dtype == dtype
    padded = F.pad(x.float(), (4, 4, 4, 4), mode="reflect")
    found = set()
    for i in range(len(x)):
        hits = [(oy, ox, flip) for flip in (False, True) for oy in range(9) for ox in range(9)
                if torch.equal(out[i].float(), (padded[i].flip(2) if flip else padded[i])[:, oy:oy + 12, ox:ox + 10])]
        assert len(hits) == 1, (i, hits)
        found.add(hits[0])
    assert len({(oy, ox) for oy, ox, _ in found}) > 20 and {f for *_, f in found} == {False, True}


def test_augment_reproducible_from_generator():
    x = _batch()
    for kind in ("flip", "flip_crop"):
        a = augment_batch(x, kind, torch.Generator().manual_seed(9))
        b = augment_batch(x, kind, torch.Generator().manual_seed(9))
        c = augment_batch(x, kind, torch.Generator().manual_seed(10))
        assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="kind='rotate'"):
        augment_batch(x, "rotate", torch.Generator())
    with pytest.raises(ValueError, match="needs a torch.Generator"):
        augment_batch(x, "flip", None)


def test_dataset_names_are_the_contract():
    assert DATASET_NAMES == ("digits", "synthetic", "cifar10", "cifar100", "imagefolder")
