"""The checkpoints a study's unfinished runs continue from.

Ray Tune keeps each trial's checkpoints in its trial folder,
``<store>/_tune/<study>/<run_id>/checkpoint_NNNNNN/state.pt`` (the file the
trial's session writes: :mod:`dynstudy.jobs.trial.session`). Every
``dynstudy run`` trains exactly the runs its plan names
(:func:`dynstudy.study.identity.plan_study`) in a fresh Tune experiment, so
what trains never depends on how far Tune's own experiment state got before a
driver died. Before that experiment starts, ``--resume`` keeps each unfinished
run's newest whole checkpoint as ``<store>/_tune/<study>.resume/<run_id>.pt``
(:func:`keep_for_resume`); Tune's trial folders are then cleared
(:func:`clear_trial_folders`) and the trial restores from the kept file until
Tune holds a newer checkpoint of its own.

A checkpoint is *whole* when its ``state.pt`` is a complete zip archive (the
format of ``torch.save``): a copy cut short by a kill is passed over for the
run's previous checkpoint.
"""
from __future__ import annotations

import io
import re
import uuid
import zipfile
from typing import Iterable, Optional

from pyarrow import fs as pafs

from dynstudy.jobs.trial.checkpoint_file import STATE_FILE
from dynstudy.store_contract.files import filesystem

_CHECKPOINT = re.compile(r"checkpoint_(\d{6})")


def resume_folder(exp_path: str) -> str:
    """Where ``--resume`` keeps the checkpoints of the experiment at ``exp_path``."""
    return f"{exp_path.rstrip('/')}.resume"


def is_whole(fs: pafs.FileSystem, inner: str) -> bool:
    """True when the file at ``inner`` is a complete zip archive (a finished ``torch.save``)."""
    try:
        with fs.open_input_stream(inner) as fh:
            data = fh.read()
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile):
        return False


def newest_checkpoint(exp_path: str, run_id: str) -> Optional[str]:
    """Path of the newest whole ``state.pt`` in ``run_id``'s Tune trial folder (None: there is none)."""
    fs, inner = filesystem(f"{exp_path}/{run_id}")
    infos = fs.get_file_info(pafs.FileSelector(inner, allow_not_found=True))
    folders = sorted((i.path for i in infos if i.type == pafs.FileType.Directory
                      and _CHECKPOINT.fullmatch(i.base_name)), reverse=True)
    for folder in folders:
        if is_whole(fs, f"{folder}/{STATE_FILE}"):
            return f"{exp_path}/{run_id}/{folder.rsplit('/', 1)[1]}/{STATE_FILE}"
    return None


def _copy(src: str, dst: str) -> None:
    """Copy ``src`` to ``dst`` so that ``dst`` is never seen half written."""
    fs, src_inner = filesystem(src)
    _, dst_inner = filesystem(dst)
    fs.create_dir(dst_inner.rsplit("/", 1)[0], recursive=True)
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = f"{dst_inner.rsplit('/', 1)[0]}/.{uuid.uuid4().hex}.tmp"
        fs.copy_file(src_inner, tmp)
        fs.move(tmp, dst_inner)
    else:  # an object becomes visible only once its copy completes
        fs.copy_file(src_inner, dst_inner)


def keep_for_resume(exp_path: str, run_ids: Iterable[str]) -> dict[str, str]:
    """Keep each run's newest whole checkpoint outside Tune's trial folders; return run_id -> the kept file.

    A run whose trial folder holds no whole checkpoint keeps the file an
    earlier ``--resume`` kept, if any; a run in neither place is left out
    (it starts from scratch).
    """
    kept = {}
    folder = resume_folder(exp_path)
    for run_id in run_ids:
        dst = f"{folder}/{run_id}.pt"
        src = newest_checkpoint(exp_path, run_id)
        if src is not None:  # a whole file, copied so that the copy is never seen half written
            _copy(src, dst)
            kept[run_id] = dst
        elif is_whole(*filesystem(dst)):
            kept[run_id] = dst
    return kept


def _delete(path: str, is_dir: bool) -> None:
    fs, inner = filesystem(path)
    try:
        fs.delete_dir(inner) if is_dir else fs.delete_file(inner)
    except (FileNotFoundError, OSError):
        pass


def clear_trial_folders(exp_path: str, run_ids: Iterable[str]) -> None:
    """Remove Tune's trial folders (checkpoints, logs) of ``run_ids``, which a fresh experiment writes again."""
    for run_id in run_ids:
        _delete(f"{exp_path}/{run_id}", is_dir=True)


def forget_kept(exp_path: str, run_ids: Iterable[str]) -> None:
    """Remove the checkpoints :func:`keep_for_resume` kept for ``run_ids`` (runs that start afresh or are done)."""
    for run_id in run_ids:
        _delete(f"{resume_folder(exp_path)}/{run_id}.pt", is_dir=False)
