"""Training: PretrainModule, one run (fit), optimiser and schedule, FLOPs, checkpoints, resume, run records, tracking."""
