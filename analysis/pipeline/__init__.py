"""The store as a whole: its DuckDB catalog, and ``dynstudy analyze`` (which runs to analyse, their analysis in
worker processes or Ray tasks, the cross-run tables at the end).

Imports :mod:`dynstudy.analysis.run`, :mod:`dynstudy.analysis.stats`, :mod:`dynstudy.analysis.kernels` and
:mod:`dynstudy.store_contract`.
"""
