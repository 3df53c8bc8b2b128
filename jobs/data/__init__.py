"""Datasets for a trial: loaded into memory as uint8 tensors, augmented in batches, kept on the training device."""
