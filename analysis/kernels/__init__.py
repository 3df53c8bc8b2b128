"""Metric kernels: pure functions over arrays (DFA, Kuramoto, Psi, volatility, taxonomy, temporal series).

Imports numpy, scipy and numba only; no file, store or table is read here.
The trial's online stopping imports these kernels too.
"""
