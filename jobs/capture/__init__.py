"""Activation capture for any training loop: the recorder (``dynstudy.Recorder``) and its Lightning and Hugging Face
callbacks, the probe pass, its rows written off the loop, the metrics computed online, the capture settings.

Imports :mod:`dynstudy.jobs.models`, :mod:`dynstudy.jobs.data`, :mod:`dynstudy.analysis.kernels` and
:mod:`dynstudy.store_contract`; the callbacks import their frameworks (the ``lightning`` and ``hf`` extras).
"""
