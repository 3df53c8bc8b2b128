"""``dynstudy.analysis``: from a store's signal files to metric tables, verdicts and the report.

Sub-packages, in the direction data flows (each imports only those before it,
and :mod:`dynstudy.store_contract`):

- :mod:`dynstudy.analysis.kernels`: the metric kernels and their parameters, pure numpy/scipy/numba;
- :mod:`dynstudy.analysis.run`: one run's analysis, its input files -> its metric rows;
- :mod:`dynstudy.analysis.stats`: cross-run statistics and verdicts over run summaries;
- :mod:`dynstudy.analysis.pipeline`: the DuckDB catalog over a store and ``dynstudy analyze``;
- :mod:`dynstudy.analysis.report`: the HTML report read from a catalog.

Nothing here imports torch, ray, :mod:`dynstudy.jobs` or :mod:`dynstudy.study` (ray only inside
:mod:`dynstudy.analysis.pipeline.ray_dispatch`, when an analysis is sent to a cluster).
"""
