"""Training: feedback -> datasets, paraphrase augmentation, TRL training in a child process."""
