"""Cross-run statistics and verdicts: seed variability, the paper's claims, contrasts with controls, sensitivity.

Pure functions over rows of run summaries; imports :mod:`dynstudy.analysis.kernels` only.
"""
