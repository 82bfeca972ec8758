"""Training engine: the Fabric loop, checkpoints, evaluation and progress display."""
