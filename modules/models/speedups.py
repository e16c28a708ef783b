"""``--compile``: a loaded model's denoiser (the SD UNet, the SD3 / Flux transformer) made faster on its device,
without changing what it computes.

- The denoiser's ``forward`` is compiled in place with ``torch.compile`` (so ``pipe.unet`` stays the
  UNet every caller, LoRA loader and ``from_pipe`` sibling knows), after a conv UNet is put in channels_last
  (the layout cuDNN's convolutions are fastest in). Mode "default": "max-autotune(-no-cudagraphs)" benchmarks
  kernel variants for every new shape and batch size (minutes on an SDXL UNet, each time a new size or a batch of
  waiting jobs arrives), for a few percent more; "reduce-overhead" / "max-autotune" add CUDA graphs, which keep a
  copy of the activations per shape and replay static weight addresses, a poor fit for a studio whose sizes,
  batches and LoRAs change from job to job. Compiling happens on the first job at each new shape (the second new
  shape compiles once more with dynamic sizes, then sizes change without recompiling). The compiled code goes to
  ``<data-dir>/compile-cache`` (``TORCHINDUCTOR_CACHE_DIR``: Inductor's FX graph, AOTAutograd, Triton, autotuning
  and dynamic-shape caches), so a restart reuses it instead of compiling again (Dynamo still traces the model,
  seconds). A compiler failure on first use (no C++ compiler for a CPU, no Triton for a GPU, an unsupported
  device) is said once in the log and the model report, and the model runs uncompiled: the job does not fail.
- A job with LoRAs runs its denoiser uncompiled (``plain_denoiser``): LoRA layers would make Dynamo recompile for
  every LoRA set and weight. The next job without LoRAs finds the compiled code it left, with no recompile.
- Fused QKV projections (diffusers' ``fuse_qkv_projections``) are not applied: diffusers' own SDXL figures put them
  at ~1 % on top of compile (2.54 s -> 2.52 s on an A100), they keep a second copy of every attention projection,
  LoRA layers on the separate projections would be bypassed by the fused attention without a word, and
  AnimateDiff's copy of the UNet (``UNetMotionModel.from_unet2d``) refuses a fused UNet's extra weights.
  ``bench/gpu_speed.py`` measures them on bare diffusers so a GPU run can show whether that changes.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

COMPILE_MODE = "default"
CACHE_VARIABLE = "TORCHINDUCTOR_CACHE_DIR"
COMPILED = "_sfumato_compiled_forward"  # on a compiled denoiser: its _CompiledOrEager forward


@dataclass(frozen=True)
class SpeedOptions:
    """What ``apply_speedups`` does to each loaded model (``--compile``)."""

    compile: bool = False
    cache_dir: Path | None = None  # where compiled code is kept across restarts (None: torch's default)


def speed_report(options: SpeedOptions) -> list[str]:
    """The line for Settings and ``/api/v1/system`` saying what ``--compile`` does (nothing when it is off)."""
    if not options.compile:
        return []
    where = os.environ.get(CACHE_VARIABLE) or (str(options.cache_dir) if options.cache_dir else "torch's default")
    return [f"compile: torch.compile of the UNet / transformer on first use of each model and size "
            f"(mode {COMPILE_MODE}, channels_last UNet; cache {where}; jobs with LoRAs run uncompiled)"]


def apply_speedups(pipe: Any, options: SpeedOptions, report: list[str]) -> None:
    """Compile ``pipe``'s denoiser when ``options`` ask, once it is on its device; what was done is appended to
    ``report`` (the model's report in Settings), and so is a compiler failure when the first job meets it."""
    if not options.compile:
        return
    from modules.models.families import denoiser

    unet = getattr(pipe, "unet", None)
    model = denoiser(pipe)
    if any(hasattr(module, "_hf_hook") and _offloads_each_layer(module._hf_hook) for module in model.modules()):
        report.append("compile: skipped (sequential CPU offload, --lowvram, moves every layer's weights each step)")
        return
    if options.cache_dir is not None:
        os.environ.setdefault(CACHE_VARIABLE, str(options.cache_dir))  # a cache the user chose wins
    layout = ""
    if unet is not None and any(_is_conv(module) for module in unet.modules()):
        import torch

        unet.to(memory_format=torch.channels_last)
        layout = ", channels_last"
    # Inference only: a LoRA job's PEFT layers leave the base weights with requires_grad off, and Dynamo guards on
    # that flag, so the first job after a LoRA would recompile unless the weights start that way.
    model.requires_grad_(False)
    _compile_forward(model, report)
    name = "UNet" if unet is not None else "transformer"
    report.append(f"compile: {name} compiled on first use (mode {COMPILE_MODE}{layout})")


def is_compiled(model: Any) -> bool:
    return getattr(model, COMPILED, None) is not None


def _compile_forward(model: Any, report: list[str]) -> None:
    """Compile the model's own ``forward``: what wraps it from outside (accelerate's offload hook, which calls
    ``_old_forward``; a job's prompt-editing wrapper, which calls the ``forward`` it found) stays outside the
    compiled code, so it neither breaks the graph nor makes it recompile per job or per step."""
    import torch

    hooked = hasattr(model, "_hf_hook") and hasattr(model, "_old_forward")
    plain = model._old_forward if hooked else model.forward
    compiled = _CompiledOrEager(model, torch.compile(plain, mode=COMPILE_MODE), plain, report)
    setattr(model, COMPILED, compiled)
    if hooked:
        model._old_forward = compiled
    else:
        model.forward = compiled


@contextlib.contextmanager
def plain_denoiser(pipe: Any) -> Iterator[None]:
    """``pipe``'s denoiser uncompiled for a job that changes its layers (LoRAs); its compiled code is used again
    afterwards, unchanged (so no recompile)."""
    from modules.models.families import denoiser

    if not is_compiled(denoiser(pipe)):
        yield
        return
    import torch

    with torch.compiler.set_stance("force_eager"):
        yield


class _CompiledOrEager:
    """A model's compiled ``forward`` that turns into its plain ``forward`` for good the first time the compiler
    fails, saying so once. A failure is the compiler's only if the same call then runs uncompiled: an error of the
    model itself (a wrong input shape) is raised as the uncompiled model raises it, and compiling stays on."""

    def __init__(self, model: Any, compiled: Any, plain: Any, report: list[str]) -> None:
        self.name = type(model).__name__
        self.compiled = compiled
        self.plain = plain
        self.report = report
        self.failed = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.failed:
            return self.plain(*args, **kwargs)
        from torch._dynamo.exc import TorchDynamoException

        try:
            return self.compiled(*args, **kwargs)
        except TorchDynamoException as error:
            result = self.plain(*args, **kwargs)
            self.failed = True
            reason = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
            message = f"compile: failed, running uncompiled from now on ({reason[:300]})"
            log.warning("%s: %s", self.name, message)
            self.report.append(message)
            return result


def _is_conv(module: Any) -> bool:
    import torch

    return isinstance(module, torch.nn.Conv2d)


def _offloads_each_layer(hook: Any) -> bool:
    """Whether an accelerate hook is sequential offload's per-layer one (model offload's moves the whole model)."""
    return type(hook).__name__ == "AlignDevicesHook" or any(
        type(inner).__name__ == "AlignDevicesHook" for inner in getattr(hook, "hooks", ()))
