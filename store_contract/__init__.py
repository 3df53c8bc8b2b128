"""The store's contract, in one pyarrow-only package that workers and analysis both import.

- :mod:`dynstudy.store_contract.schemas`: every table, its columns and types, its file layout.
- :mod:`dynstudy.store_contract.files`: store URIs, filesystems, the atomic writer, run removal.
- :mod:`dynstudy.store_contract.scan`: what a store holds, checked file by file (foreign files named).
- :mod:`dynstudy.store_contract.index`: the cache of those checks; :mod:`dynstudy.store_contract.small_tables`:
  the small per-run tables' rows in one read.
- :mod:`dynstudy.store_contract.compaction`: run_summary compacted in an object store's index, with its writers'
  change marks.
"""
