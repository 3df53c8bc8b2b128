"""Datasets held fully in memory as uint8 tensors, plus batching and normalisation.

No DataLoader: :func:`iterate_batches` yields uint8 batches of a :class:`Split`,
:func:`normalize` turns them into float32 on their device,
:func:`dynstudy.jobs.data.augment.augment_batch` augments them. The trainer does the same
on the training device (:mod:`dynstudy.jobs.data.device_data`, bit for bit these batches).

Every loader is deterministic and independent of any run seed: the same call
returns the same tensors bit for bit, so the validation split (the source of
the probe set) is identical for every run and seed. Datasets: see
:func:`load_dataset`.
"""
from __future__ import annotations

import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

DATASET_NAMES = ("digits", "synthetic", "cifar10", "cifar100", "imagefolder")
SYNTHETIC_SEED = 20240601
SYNTHETIC_CHUNK = 100  # images per independently seeded chunk: prefixes are stable


@dataclass
class Split:
    """One split: ``x`` uint8 [N, C, H, W], ``y`` int64 [N]."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class DatasetBundle:
    """A loaded dataset with everything a trial needs to train on it."""

    name: str
    train: Split
    val: Split
    num_classes: int
    in_chans: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str
    class_names: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- helpers


def channel_stats(x: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std of uint8 images on the 0..1 scale (float64 sums)."""
    c = x.shape[1]
    total = np.zeros(c)
    total_sq = np.zeros(c)
    for start in range(0, x.shape[0], chunk):
        block = x[start:start + chunk].numpy().astype(np.float64) / 255.0
        total += block.sum(axis=(0, 2, 3))
        total_sq += (block ** 2).sum(axis=(0, 2, 3))
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


def _take_first(split: Split, n: int | None, arg: str, name: str) -> Split:
    if n is None:
        return split
    if n > len(split):
        raise ValueError(f"{arg}={n} is larger than the {len(split)} images of {name}'s split; "
                         f"pass {arg} <= {len(split)} or leave it None for all")
    return Split(split.x[:n].clone(), split.y[:n].clone())


def _check_count(value: int | None, arg: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
        raise ValueError(f"{arg}={value!r} must be a positive integer or None (the default)")


def _check_native_size(name: str, image_size: int | None, native: int) -> None:
    if image_size is not None and image_size != native:
        raise ValueError(f"image_size={image_size} is not supported for {name!r}: its images are "
                         f"{native}x{native}; pass image_size=None (or {native}) and resize inside the model")


# --------------------------------------------------------------------------- digits


def load_digits_bundle() -> DatasetBundle:
    """scikit-learn digits: 1797 8x8 images (0..16 scaled to 0..255), stratified 1437/360 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # [N, 1, 8, 8]
    labels = digits.target.astype(np.int64)
    idx_train, idx_val = train_test_split(np.arange(len(labels)), test_size=360, random_state=0,
                                          stratify=labels)
    train = Split(torch.from_numpy(images[idx_train].copy()), torch.from_numpy(labels[idx_train].copy()))
    val = Split(torch.from_numpy(images[idx_val].copy()), torch.from_numpy(labels[idx_val].copy()))
    mean, std = channel_stats(train.x)
    return DatasetBundle("digits", train, val, 10, 1, 8, mean, std, "none", [str(i) for i in range(10)])


# --------------------------------------------------------------------------- synthetic

# Class c: grating orientation (horizontal / vertical, c % 2), blob row (c // 2, one of
# five rows 2.5 px apart), blob colour (a fixed per-class palette). Every feature is
# jittered and overlaps with neighbouring classes; all are invariant to horizontal
# flips, so "flip" augmentation keeps the label. Images get heavy pixel noise.
_BLOB_ROWS = (3.0, 5.5, 8.0, 10.5, 13.0)


def _synthetic_chunk(split_id: int, chunk: int, size: int, palette: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([SYNTHETIC_SEED, split_id, chunk])
    n = SYNTHETIC_CHUNK
    y = rng.permutation(np.arange(n) % 10)
    scale = size / 16.0
    coords = np.arange(size, dtype=np.float64)
    yy, xx = np.meshgrid(coords, coords, indexing="ij")  # [S, S]
    # grating: orientation from the class parity, random frequency jitter and phase
    theta = np.where(y % 2 == 0, 0.0, np.pi / 2) + rng.normal(0.0, 0.25, n)
    freq = rng.uniform(0.12, 0.2, n) / scale
    phase = rng.uniform(0.0, 2 * np.pi, n)
    proj = np.cos(theta)[:, None, None] * yy + np.sin(theta)[:, None, None] * xx
    grating = 0.12 * np.cos(2 * np.pi * freq[:, None, None] * proj + phase[:, None, None])
    # blob: class row with jitter, random column, class colour with jitter
    row = np.array(_BLOB_ROWS)[y // 2] * scale + rng.normal(0.0, 1.1 * scale, n)
    col = rng.uniform(2.0, 14.0, n) * scale
    radius = 2.2 * scale
    blob = np.exp(-((yy - row[:, None, None]) ** 2 + (xx - col[:, None, None]) ** 2) / (2 * radius ** 2))
    colour = palette[y] + rng.normal(0.0, 0.12, (n, 3))
    img = 0.5 + grating[:, None] + blob[:, None] * colour[:, :, None, None]
    img = img + rng.normal(0.0, 0.16, (n, 3, size, size))
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8), y.astype(np.int64)


def synthetic_split(n: int, split_id: int, size: int = 16) -> Split:
    """``n`` synthetic images; chunk ``k`` is seeded by (SYNTHETIC_SEED, split_id, k), so a
    smaller ``n`` gives exactly the first ``n`` images of a larger one."""
    palette = np.random.default_rng([SYNTHETIC_SEED, 99]).uniform(-0.25, 0.25, size=(10, 3))
    chunks = [_synthetic_chunk(split_id, k, size, palette) for k in range(-(-n // SYNTHETIC_CHUNK))]
    x = np.ascontiguousarray(np.concatenate([c[0] for c in chunks])[:n])
    return Split(torch.from_numpy(x), torch.from_numpy(np.concatenate([c[1] for c in chunks])[:n]))


def load_synthetic_bundle(n_train: int | None = None, n_val: int | None = None,
                          image_size: int | None = None) -> DatasetBundle:
    """Synthetic 10-class RGB dataset; default 2000 train / 512 val images of 16x16."""
    size = 16 if image_size is None else int(image_size)
    if size < 8:
        raise ValueError(f"image_size={image_size} is too small for 'synthetic'; pass 8 or more (default 16)")
    train = synthetic_split(2000 if n_train is None else n_train, 0, size)
    val = synthetic_split(512 if n_val is None else n_val, 1, size)
    mean, std = channel_stats(train.x)
    return DatasetBundle("synthetic", train, val, 10, 3, size, mean, std, "flip",
                         [f"class_{i}" for i in range(10)])


# --------------------------------------------------------------------------- CIFAR

# Published per-channel statistics of the training sets (population std over all pixels).
CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def _cifar_class(name: str):
    from dynstudy.jobs.models.tv_compat import ensure_torchvision

    ensure_torchvision()
    from torchvision.datasets import CIFAR10, CIFAR100

    return CIFAR10 if name == "cifar10" else CIFAR100


def _read_pickle(path: Path, fix: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR file {path} is missing; {fix}")
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except Exception as err:  # truncated or foreign files raise many kinds of errors
        raise ValueError(f"CIFAR file {path} is corrupt or not a CIFAR pickle "
                         f"({type(err).__name__}: {err}); {fix}") from err
    if not isinstance(entry, dict):
        raise ValueError(f"CIFAR file {path} holds a {type(entry).__name__}, not a dict; {fix}")
    return entry


def _read_cifar_batch(path: Path, label_key: str, num_classes: int, fix: str) -> tuple[np.ndarray, np.ndarray]:
    entry = _read_pickle(path, fix)
    missing = [k for k in ("data", label_key) if k not in entry]
    if missing:
        raise ValueError(f"CIFAR file {path} lacks {missing} (has {sorted(entry)}); {fix}")
    data = np.asarray(entry["data"])
    labels = np.asarray(entry[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"CIFAR file {path}: 'data' must be uint8 [N, 3072], got {data.dtype} "
                         f"{data.shape}; {fix}")
    if labels.shape != (data.shape[0],) or labels.size == 0 or labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"CIFAR file {path}: {label_key!r} must hold {data.shape[0]} labels in "
                         f"0..{num_classes - 1}; {fix}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def load_cifar_bundle(name: str, root: str | None, *, download: bool = False) -> DatasetBundle:
    """CIFAR-10/100 from torchvision's layout under ``root``; train batches -> train, test -> val.

    File names, label keys and meta keys come from torchvision's ``CIFAR10`` /
    ``CIFAR100`` classes and the pickles are read exactly as they read them.
    With ``download=True`` torchvision downloads and md5-verifies the archive;
    without it the files are checked structurally (keys, dtype, shape, label
    range) but not by md5, so extracted copies and generated files load.
    """
    cls = _cifar_class(name)
    num_classes = 10 if name == "cifar10" else 100
    fix = (f"pass download=True on a machine with internet access, or point root at a directory "
           f"holding an extracted {cls.base_folder}/")
    if root is None:
        raise ValueError(f"dataset {name!r} needs root=<directory>; {fix}")
    root_path = Path(root).expanduser()
    if download:
        try:
            cls(root=str(root_path), train=False, download=True)
        except Exception as err:
            raise RuntimeError(f"downloading {name} to {root_path} failed ({type(err).__name__}: {err}); "
                               f"on an offline machine pass download=False and point root at an extracted "
                               f"{cls.base_folder}/") from err
    folder = root_path / cls.base_folder
    if not folder.is_dir():
        raise FileNotFoundError(f"{name}: folder {folder} does not exist (root={root}); {fix}")
    label_key = "labels" if name == "cifar10" else "fine_labels"
    splits = []
    for file_list in (cls.train_list, cls.test_list):
        parts = [_read_cifar_batch(folder / fname, label_key, num_classes, fix) for fname, _md5 in file_list]
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        splits.append(Split(torch.from_numpy(x), torch.from_numpy(y)))
    meta_path = folder / cls.meta["filename"]
    meta = _read_pickle(meta_path, fix)
    names = meta.get(cls.meta["key"])
    if not isinstance(names, list) or len(names) != num_classes:
        raise ValueError(f"CIFAR meta file {meta_path}: {cls.meta['key']!r} must list {num_classes} class "
                         f"names; {fix}")
    mean, std = CIFAR_STATS[name]
    augment = "flip" if name == "cifar10" else "flip_crop"
    return DatasetBundle(name, splits[0], splits[1], num_classes, 3, 32, mean, std, augment,
                         [str(n) for n in names])


# --------------------------------------------------------------------------- public API


def load_dataset(name: str, root: str | None = None, *, download: bool = False, image_size: int | None = None,
                 n_train: int | None = None, n_val: int | None = None) -> DatasetBundle:
    """Load a dataset fully into memory.

    Parameters
    ----------
    name : str
        One of ``DATASET_NAMES``: ``digits`` (scikit-learn's 1797 real 8x8
        digits, 1 channel, stratified 1437 / 360 split, seed 0),
        ``synthetic`` (generated 10-class RGB 16x16, 2000 / 512),
        ``cifar10`` / ``cifar100`` (pickles under ``root``; val = test batch),
        ``imagefolder`` (``root/train/<class>/*``, ``root/val/<class>/*``).
    root : str or None
        Directory of the files (CIFAR, imagefolder); ignored for digits/synthetic.
    download : bool
        CIFAR only: download through torchvision when the files are missing.
    image_size : int or None
        imagefolder: output size (default 64); synthetic: generated size
        (default 16); digits (8) and CIFAR (32) accept only their native size.
    n_train, n_val : int or None
        Keep only the first n images of a split (synthetic: generate n).

    Returns
    -------
    DatasetBundle
        Deterministic: identical tensors for identical arguments.
    """
    if name not in DATASET_NAMES:
        raise ValueError(f"dataset name={name!r} is unknown; use one of {DATASET_NAMES}")
    _check_count(n_train, "n_train")
    _check_count(n_val, "n_val")
    if image_size is not None:
        _check_count(image_size, "image_size")
    if name == "synthetic":
        return load_synthetic_bundle(n_train, n_val, image_size)
    if name == "digits":
        _check_native_size(name, image_size, 8)
        bundle = load_digits_bundle()
    elif name in ("cifar10", "cifar100"):
        _check_native_size(name, image_size, 32)
        bundle = load_cifar_bundle(name, root, download=download)
    else:
        from dynstudy.jobs.data.imagefolder import load_imagefolder_bundle

        return load_imagefolder_bundle(root, image_size=64 if image_size is None else image_size,
                                       download=download, n_train=n_train, n_val=n_val)
    bundle.train = _take_first(bundle.train, n_train, "n_train", name)
    bundle.val = _take_first(bundle.val, n_val, "n_val", name)
    return bundle


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """``(x / 255 - mean) / std`` per channel as float32, on ``x``'s device.

    Parameters
    ----------
    x : torch.Tensor
        uint8 images [N, C, H, W].
    mean, std : tuple of float
        Per-channel statistics on the 0..1 scale (``DatasetBundle.mean/std``).
    """
    if x.dtype != torch.uint8:
        raise TypeError(f"normalize expects uint8 images, got dtype {x.dtype}; "
                        "normalise the raw Split tensors (normalising twice is a bug)")
    if x.dim() != 4 or x.shape[1] != len(mean) or len(mean) != len(std):
        raise ValueError(f"normalize: x of shape {tuple(x.shape)} needs len(mean) == len(std) == channels, "
                         f"got {len(mean)} means and {len(std)} stds")
    return normalize_with(x, *norm_tensors(mean, std, x.device))


def norm_tensors(mean: tuple[float, ...], std: tuple[float, ...], device) -> tuple[torch.Tensor, torch.Tensor]:
    """``mean`` and ``std`` as float32 [1, C, 1, 1] tensors on ``device`` (made once, reused per batch)."""
    return (torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1),
            torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1))


def normalize_with(x: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """:func:`normalize` with the statistics already on ``x``'s device (:func:`norm_tensors`)."""
    return (x.float().div_(255.0) - m) / s


def iterate_batches(split: Split, batch_size: int, *, shuffle: bool, generator: torch.Generator | None,
                    drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x_uint8, y)`` batches of ``split``.

    With ``shuffle`` the order is ``torch.randperm(N, generator=generator)``
    (one permutation per call, i.e. per epoch); without it the split's order.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
    if shuffle and generator is None:
        raise ValueError("iterate_batches(shuffle=True) needs generator=torch.Generator().manual_seed(seed)")
    n = len(split)
    stop = n - n % batch_size if drop_last else n
    if shuffle:
        order = torch.randperm(n, generator=generator, device=generator.device).cpu()
        for start in range(0, stop, batch_size):
            idx = order[start:start + batch_size]
            yield split.x[idx], split.y[idx]
    else:
        for start in range(0, stop, batch_size):
            yield split.x[start:start + batch_size], split.y[start:start + batch_size]
