"""A trial's store writes on a background thread, off the training loop.

The trial hands each file to :meth:`AsyncWriter.submit` (a function that
builds its columns and the store address) and goes on training; one thread
writes the files in the order they were submitted, through the same atomic
writer as before (:func:`dynstudy.store_contract.files.write_rows`). The queue is
bounded: a trial that captures faster than the store takes files waits at
``submit`` instead of holding ever more captures in memory.

:meth:`AsyncWriter.flush` waits until everything submitted is on the store.
The trainer flushes before each checkpoint is reported, so a checkpoint
never runs ahead of its epoch's files: a process killed with writes still
queued resumes from the last checkpoint, whose files are all written, and
writes the lost epoch again under the same names (never twice). A write that
fails is not lost: the first error is raised, naming the file, by the next
``submit`` or ``flush`` in the trial (what was queued behind it is dropped,
since the trial is failing and its resume rewrites it).
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from dynstudy.store_contract.files import write_rows

#: Files a trial may have queued before ``submit`` waits (an epoch writes 3 or 4).
DEFAULT_MAX_QUEUED = 8


class AsyncWriteError(RuntimeError):
    """A background write failed; ``__cause__`` is the original error."""


class AsyncWriter:
    """One writer thread per trial with a bounded queue of pending files.

    Parameters
    ----------
    store : the store the files go to.
    max_queued : files waiting before :meth:`submit` blocks.
    write : the function that writes one file (default: ``write_rows``).
    """

    def __init__(self, store: str, max_queued: int = DEFAULT_MAX_QUEUED, write: Callable | None = None):
        if max_queued < 1:
            raise ValueError(f"max_queued={max_queued} must be at least 1")
        self.store, self._write = store, write or write_rows
        self._queue: queue.Queue = queue.Queue(maxsize=max_queued)
        self._error: BaseException | None = None
        self._failed_file: str | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="dynstudy-writer", daemon=True)
        self._thread.start()

    def submit(self, table: str, run_id: str | None, name: str, columns: Callable[[], dict] | dict) -> None:
        """Queue one file of ``table``; ``columns`` is the dict of columns or a function that builds it there."""
        if self._closed:
            raise RuntimeError("AsyncWriter.submit after close()")
        self._raise_error()
        self._queue.put((table, run_id, name, columns))

    def pending(self) -> int:
        """Files submitted and not yet written (or dropped)."""
        return self._queue.unfinished_tasks

    def flush(self) -> None:
        """Wait until every submitted file is written; raise :class:`AsyncWriteError` if one failed."""
        self._queue.join()
        self._raise_error()

    def close(self, raise_errors: bool = True) -> None:
        """Flush, then stop the thread. ``raise_errors=False`` when the trial is already failing."""
        if self._closed:
            return
        try:
            self._queue.join()
        finally:
            self._closed = True
            self._queue.put(None)
            self._thread.join()
        if raise_errors:
            self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            err = self._error
            raise AsyncWriteError(f"writing {self._failed_file} in the background failed: "
                                  f"{type(err).__name__}: {err}") from err

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                if self._error is None:
                    table, run_id, name, columns = job
                    try:
                        self._write(self.store, table, run_id, name, columns() if callable(columns) else columns)
                    except BaseException as err:  # surfaced in the trial by submit/flush
                        self._error, self._failed_file = err, f"{table}/run_id={run_id}/{name}.parquet"
            finally:
                self._queue.task_done()
