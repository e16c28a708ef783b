"""Finding and loading models: checkpoints, VAEs and their pipelines."""
