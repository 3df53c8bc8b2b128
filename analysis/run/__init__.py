"""One run's analysis: its capture files read with pyarrow, every capture's metrics and controls, the run's series.

Imports :mod:`dynstudy.analysis.kernels` and :mod:`dynstudy.store_contract`.
"""
