"""One run's analysis: which files it reads and whether its outputs are current, its captures decoded with
pyarrow, every capture's metrics and controls, the run's series and its temporal protocol.

Imports :mod:`dynstudy.analysis.kernels` and :mod:`dynstudy.store_contract`.
"""
