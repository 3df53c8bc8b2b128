"""The name of the file a trial's checkpoint holds (its :meth:`~dynstudy.jobs.trial.trainer.Trial.state_dict`,
saved with ``torch.save``), read by the session that writes it and by the study that keeps it for ``--resume``."""

STATE_FILE = "state.pt"
