"""Training and data for Sfumato's embedded upscalers (``models/ESRGAN/sfumato-compact-{2,4}x.safetensors``).

Developer-side only: the engine never imports this package, it loads the saved files through spandrel like any
user's ESRGAN-folder model. ``python -m tools.upscaler.train --help`` reproduces them.
"""
