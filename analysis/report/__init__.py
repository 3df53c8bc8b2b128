"""The study report: rows read from a catalog, plotly figures, HTML sections and the page around them.

Imports :mod:`dynstudy.analysis.kernels`, :mod:`dynstudy.analysis.stats` and :mod:`dynstudy.store_contract`;
it reads a DuckDB connection it is given and writes one HTML file plus CSV tables.
"""
