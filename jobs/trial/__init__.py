"""One trial from start to end: the fields its config holds, the training loop and its checkpoint (or the user's own
training function), where checkpoints live, fault drills."""
