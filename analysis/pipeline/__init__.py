"""The store as a whole: its DuckDB catalog, what each run's analysis reads, and ``dynstudy analyze``.

Imports :mod:`dynstudy.analysis.run`, :mod:`dynstudy.analysis.stats` and :mod:`dynstudy.store_contract`.
"""
