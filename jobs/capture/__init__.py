"""Activation capture inside a trial: the probe pass, its rows written off the loop, the metrics computed online.

Imports :mod:`dynstudy.jobs.models`, :mod:`dynstudy.jobs.data`, :mod:`dynstudy.analysis.kernels` and
:mod:`dynstudy.store_contract`.
"""
