"""One trial from start to end: the training loop, its checkpoint state, where checkpoints live, fault drills."""
