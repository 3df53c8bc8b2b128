"""``dynstudy.jobs``: what runs inside one trial (a worker process of a study).

- :mod:`dynstudy.jobs.models`: model names, the zoo, timm/torchvision/user builders, capture stages;
- :mod:`dynstudy.jobs.data`: datasets held in memory, augmentation, device-resident batches;
- :mod:`dynstudy.jobs.capture`: the recorder any training loop records through (the probe's activations,
  their store writes, the online metrics) and its Lightning and Hugging Face callbacks;
- :mod:`dynstudy.jobs.trial`: the training loop (or the user's training function), its checkpoints and
  sessions, fault injection;
- :mod:`dynstudy.jobs.user_code`: importing the user's ``module.path:function``.

Imports torch and :mod:`dynstudy.store_contract`; of :mod:`dynstudy.analysis` only the pure kernels
(:mod:`dynstudy.analysis.kernels`); never :mod:`dynstudy.study`.
"""
