"""One trial from start to end: the fields its config holds, the training loop and its checkpoint, where
checkpoints live, fault drills."""
