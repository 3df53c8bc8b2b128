"""ImageFolder datasets (ImageNet-100 style) loaded into memory for dynstudy.

``root/train/<class>/*`` and ``root/val/<class>/*``; every image is converted
to RGB, its shorter side resized and centre-cropped to ``image_size``, and the
whole split held as a uint8 tensor like the other datasets of :mod:`dynstudy.jobs.data.in_memory`.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from dynstudy.jobs.data.in_memory import DatasetBundle, Split, channel_stats

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
IMAGEFOLDER_ORDER_SEED = 0


def _scan_split(split_dir: Path) -> dict[str, list[Path]]:
    if not split_dir.is_dir():
        raise FileNotFoundError(f"imagefolder: {split_dir} does not exist; root must hold train/ and val/, "
                                "each with one subfolder of images per class")
    classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ValueError(f"imagefolder: {split_dir} has no class subfolders; put each class's images in "
                         f"{split_dir}/<class_name>/")
    files = {}
    for c in classes:
        found = sorted(p for p in (split_dir / c).rglob("*")
                       if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS and not p.name.startswith("."))
        if not found:
            raise ValueError(f"imagefolder: class folder {split_dir / c} holds no images with extensions "
                             f"{IMG_EXTENSIONS}; add images or remove the folder")
        files[c] = found
    return files


def _load_image(path: Path, size: int) -> np.ndarray:
    """RGB, shorter side resized to ``size`` (bilinear), centre crop ``size`` x ``size``; [3, size, size]."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
    except Exception as err:
        raise ValueError(f"imagefolder: cannot read image {path} ({type(err).__name__}: {err}); "
                         "replace or delete the file") from err
    w, h = im.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    im = im.resize((nw, nh), Image.BILINEAR)
    left, top = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))
    return np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.uint8).transpose(2, 0, 1)


def _load_image_split(files: dict[str, list[Path]], classes: list[str], size: int, n: int | None,
                      arg: str, split_dir: Path) -> Split:
    paths = [p for c in classes for p in files[c]]
    labels = np.array([i for i, c in enumerate(classes) for _ in files[c]], dtype=np.int64)
    order = np.random.default_rng(IMAGEFOLDER_ORDER_SEED).permutation(len(paths))
    if n is not None:
        if n > len(paths):
            raise ValueError(f"{arg}={n} is larger than the {len(paths)} images in {split_dir}; "
                             f"pass {arg} <= {len(paths)} or leave it None for all")
        order = order[:n]
    x = np.empty((len(order), 3, size, size), dtype=np.uint8)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for i, img in enumerate(pool.map(lambda j: _load_image(paths[j], size), order)):
            x[i] = img
    return Split(torch.from_numpy(x), torch.from_numpy(labels[order]))


def load_imagefolder_bundle(root: str | None, *, image_size: int = 64, download: bool = False,
                            n_train: int | None = None, n_val: int | None = None) -> DatasetBundle:
    """``root/train/<class>/*`` and ``root/val/<class>/*`` loaded into memory.

    Classes are the sorted folder names (identical in train and val). Images
    are put in a fixed pseudo-random order (seed 0) so that the first n of a
    split mix all classes; n_train/n_val select before decoding.
    """
    if download:
        raise ValueError("download=True is not supported for 'imagefolder'; prepare root/train and root/val "
                         "yourself and pass download=False")
    if root is None:
        raise ValueError("dataset 'imagefolder' needs root=<directory with train/ and val/ class folders>")
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise FileNotFoundError(f"imagefolder: root {root_path} does not exist; point root at a directory "
                                "with train/ and val/ class folders")
    train_files = _scan_split(root_path / "train")
    val_files = _scan_split(root_path / "val")
    if sorted(train_files) != sorted(val_files):
        only_train = sorted(set(train_files) - set(val_files))
        only_val = sorted(set(val_files) - set(train_files))
        raise ValueError(f"imagefolder: class folders of {root_path / 'train'} and {root_path / 'val'} differ "
                         f"(only in train: {only_train}; only in val: {only_val}); make both hold the same classes")
    classes = sorted(train_files)
    train = _load_image_split(train_files, classes, image_size, n_train, "n_train", root_path / "train")
    val = _load_image_split(val_files, classes, image_size, n_val, "n_val", root_path / "val")
    mean, std = channel_stats(train.x)
    return DatasetBundle("imagefolder", train, val, len(classes), 3, image_size, mean, std, "flip", classes)


