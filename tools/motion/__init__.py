"""The embedded motion model: the shapes world set in motion, its tracker and its training script."""
