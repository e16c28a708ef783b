"""End an AnimateDiff motion adapter's work part-way through sampling, as ControlNet's "ending control step" does.

The motion adapter decides in the early, noisy steps where the subject goes; its temporal attention keeps mixing
features across frames to the end, and in the last steps that mixing blurs a moving subject. With ``motion_end``
below 1, the adapter (its motion modules and the LoRA its folder may ship) acts during that first fraction of the
steps, and the image model alone refines each frame after: measured on the embedded motion model, shapes come out
right far more often and keep their colour, while the motion stays (``bench/eval_motion.py --motion-end``).
ComfyUI's AnimateDiff-Evolved offers the same through its effect keyframes.

A ``MotionSwitch`` belongs to one loaded pipeline (the worker thread's); the motion modules it turns off are
skipped, not computed and thrown away, so the late steps are also cheaper.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

MOTION_MODULE_CLASSES = ("AnimateDiffTransformer3D",)


def _pass_through(hidden_states: Any, *_args: Any, **_kwargs: Any) -> Any:
    """A switched-off motion module: the features go on as the image model made them."""
    return hidden_states


def steps_with_motion(motion_end: float, total: int) -> int:
    """How many of ``total`` steps the motion adapter acts in (at least one unless ``motion_end`` is 0)."""
    if motion_end >= 1.0 or total <= 0:
        return total
    if motion_end <= 0.0:
        return 0
    return max(1, min(total, round(motion_end * total)))


class MotionSwitch:
    """Turns an AnimateDiff pipeline's motion adapter (motion modules and its LoRA) on and off between steps."""

    def __init__(self, pipe: Any, lora_name: str | None = None) -> None:
        """``lora_name``: the adapter's LoRA, switched with the modules when it is loaded on ``pipe.unet``."""
        self.pipe = pipe
        self.lora_name = lora_name if lora_name in (getattr(pipe.unet, "peft_config", None) or {}) else None
        # a LoRA's text-encoder part is PEFT-injected (modules.video.pipelines.load_motion_lora), not diffusers'
        from modules.models.networks import adapters_of

        encoder = getattr(pipe, "text_encoder", None)
        self.text_lora_name = lora_name if encoder is not None and lora_name in adapters_of(encoder) else None
        self.modules = [module for module in pipe.unet.modules() if type(module).__name__ in MOTION_MODULE_CLASSES]
        self.on = True
        self.motion_end = 1.0

    def set(self, on: bool) -> None:
        if on == self.on:
            return
        for module in self.modules:
            if on:
                module.__dict__.pop("forward", None)
            else:
                module.forward = _pass_through
        if self.lora_name:
            self.pipe.set_adapters([self.lora_name], [1.0 if on else 0.0])
        if self.text_lora_name:
            from diffusers.utils.peft_utils import set_weights_and_activate_adapters

            set_weights_and_activate_adapters(self.pipe.text_encoder, [self.text_lora_name], [1.0 if on else 0.0])
        self.on = on

    def after_step(self, done: int, total: int) -> None:
        """Called once ``done`` of ``total`` steps are done: the next step runs with the adapter while it is in
        its span (``total`` is the pipeline's own count: video-to-video runs fewer steps than asked)."""
        self.set(done < steps_with_motion(self.motion_end, total))

    @contextlib.contextmanager
    def run(self, motion_end: float) -> Iterator[MotionSwitch]:
        """One generation: the adapter on from its first step (off throughout if ``motion_end`` is 0), and on
        again afterwards, whatever happened."""
        self.motion_end = motion_end
        self.set(motion_end > 0.0)
        try:
            yield self
        finally:
            self.motion_end = 1.0
            self.set(True)
