"""The store as a whole: its DuckDB catalog (and the report's, which reads the per-run tables whole), and
``dynstudy analyze`` (which runs to analyse, their analysis in worker processes or Ray tasks, the cross-run tables
at the end, the stopping-rule comparison).

Imports :mod:`dynstudy.analysis.run`, :mod:`dynstudy.analysis.stats`, :mod:`dynstudy.analysis.kernels` and
:mod:`dynstudy.store_contract`.
"""
