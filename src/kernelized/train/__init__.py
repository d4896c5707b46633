"""Training: Trainer, schedules, atomic checkpoints, exact resume, data-parallel launch."""
