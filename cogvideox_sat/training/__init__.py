"""Training loop glue: DeepSpeed, checkpoints, logging."""
