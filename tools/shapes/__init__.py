"""The embedded image model's world: its dataset, its pixel checks and its training script."""
