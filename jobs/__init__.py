"""``dynstudy.jobs``: what runs inside one trial (a worker process of a study).

- :mod:`dynstudy.jobs.models`: model names, the zoo, timm/torchvision/user builders, capture stages;
- :mod:`dynstudy.jobs.data`: datasets held in memory, augmentation, device-resident batches;
- :mod:`dynstudy.jobs.capture`: the probe's activations, their store writes, the online metrics;
- :mod:`dynstudy.jobs.trial`: the training loop, its checkpoints and sessions, fault injection.

Imports torch and :mod:`dynstudy.store_contract`; of :mod:`dynstudy.analysis` only the pure kernels
(:mod:`dynstudy.analysis.kernels`); never :mod:`dynstudy.study`.
"""
