"""The embedded ControlNet: scribble / edge control images of the shapes world, its training script and data."""
