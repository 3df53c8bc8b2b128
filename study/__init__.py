"""``dynstudy.study``: a study from its spec to its trials: specs and validation, the grid, Ray Tune, the CLI.

Imports :mod:`dynstudy.store_contract`, :mod:`dynstudy.analysis` and, where a study is trained,
:mod:`dynstudy.jobs` (torch and ray only inside the functions that train).
"""
