"""ControlNet: models from ``models/ControlNet``, no-download preprocessors, and the units a request carries."""
