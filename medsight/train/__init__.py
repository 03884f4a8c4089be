"""The training engine: config, data-derived defaults, the loop, checkpoints and inference."""
