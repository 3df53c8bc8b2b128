"""Write small fake CIFAR-10 / CIFAR-100 directories in the standard python layouts.

The layouts are those of the official archives (and of what
``torchvision.datasets.CIFAR10/100`` read): python pickles (protocol 2) of
dicts with string keys.

- ``cifar-10-batches-py/``: ``data_batch_1`` .. ``data_batch_5`` and
  ``test_batch`` with ``'batch_label'`` (str), ``'labels'`` (list of int),
  ``'data'`` (uint8 ndarray [N, 3072]: the red, green and blue 32x32 planes,
  row-major) and ``'filenames'`` (list of str); ``batches.meta`` with
  ``'label_names'``, ``'num_cases_per_batch'`` and ``'num_vis'``.
- ``cifar-100-python/``: ``train`` and ``test`` with ``'filenames'``,
  ``'batch_label'``, ``'fine_labels'``, ``'coarse_labels'`` and ``'data'``;
  ``meta`` with ``'fine_label_names'`` and ``'coarse_label_names'``.

The md5 sums naturally differ from the official files.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _images(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)


def write_cifar10(root: str | Path, per_batch: int = 40, n_test: int = 60, seed: int = 0) -> dict[str, np.ndarray]:
    """Write ``root/cifar-10-batches-py`` with 5 x ``per_batch`` train and ``n_test`` test images.

    Returns
    -------
    dict
        ``train_x``/``test_x`` uint8 [N, 3, 32, 32] and ``train_y``/``test_y``
        int64 [N], in file order, as written.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    for b in range(1, 6):
        data, labels = _images(rng, per_batch), rng.integers(0, 10, per_batch).tolist()
        _dump(folder / f"data_batch_{b}", {"batch_label": f"training batch {b} of 5", "labels": labels,
                                           "data": data, "filenames": [f"img_{b}_{i}.png" for i in range(per_batch)]})
        xs.append(data)
        ys.extend(labels)
    test_x, test_y = _images(rng, n_test), rng.integers(0, 10, n_test).tolist()
    _dump(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": test_y, "data": test_x,
                                  "filenames": [f"test_{i}.png" for i in range(n_test)]})
    _dump(folder / "batches.meta", {"label_names": CIFAR10_NAMES, "num_cases_per_batch": per_batch,
                                    "num_vis": 3072})
    return {"train_x": np.concatenate(xs).reshape(-1, 3, 32, 32), "train_y": np.array(ys, dtype=np.int64),
            "test_x": test_x.reshape(-1, 3, 32, 32), "test_y": np.array(test_y, dtype=np.int64)}


def write_cifar100(root: str | Path, n_train: int = 200, n_test: int = 100, seed: int = 1) -> dict[str, np.ndarray]:
    """Write ``root/cifar-100-python`` with ``n_train`` train and ``n_test`` test images.

    Returns the arrays written, as :func:`write_cifar10` does (fine labels).
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        data, fine = _images(rng, n), rng.integers(0, 100, n)
        _dump(folder / split, {"filenames": [f"{split}_{i}.png" for i in range(n)], "batch_label": f"{split} batch",
                               "fine_labels": fine.tolist(), "coarse_labels": (fine // 5).tolist(), "data": data})
        out[f"{split}_x"], out[f"{split}_y"] = data.reshape(-1, 3, 32, 32), fine.astype(np.int64)
    _dump(folder / "meta", {"fine_label_names": [f"fine_{i:02d}" for i in range(100)],
                            "coarse_label_names": [f"coarse_{i:02d}" for i in range(20)]})
    return out
