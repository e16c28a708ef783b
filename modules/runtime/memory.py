"""Memory-saving options for a loaded pipeline, and putting it on its device.

A1111 users know these as command-line flags (``--medvram``, ``--lowvram``), so the options come from flags and
``apply_memory_options`` reports, in words, what it did: the report is shown at start-up and by the memory
endpoint, which is how a user finds out why their GPU renders slowly (or on the CPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

    from modules.runtime.devices import DeviceInfo

AttentionSlicing = bool | Literal["auto"]
# "auto" attention slicing turns on below this much accelerator memory; above it PyTorch's SDPA attention is
# already memory-efficient and slicing would only slow it down (as diffusers warns).
AUTO_SLICING_MAX_MEMORY = 6 * 1024**3


@dataclass(frozen=True)
class MemoryOptions:
    """What to trade speed for memory with. ``attention_slicing="auto"`` decides from the device."""

    attention_slicing: AttentionSlicing = False
    vae_slicing: bool = False
    vae_tiling: bool = False
    model_cpu_offload: bool = False
    sequential_cpu_offload: bool = False

    @classmethod
    def from_flags(
        cls,
        *,
        medvram: bool = False,
        lowvram: bool = False,
        attention_slicing: AttentionSlicing = False,
        vae_slicing: bool = False,
        vae_tiling: bool = False,
    ) -> MemoryOptions:
        """Options from A1111-style flags: ``--medvram`` = model CPU offload, ``--lowvram`` = sequential offload."""
        return cls(
            attention_slicing=attention_slicing,
            vae_slicing=vae_slicing,
            vae_tiling=vae_tiling,
            model_cpu_offload=medvram,
            sequential_cpu_offload=lowvram,
        )


def _device_info(device: DeviceInfo | str) -> DeviceInfo:
    """A ``DeviceInfo`` for a bare device string (memory unknown), so callers may pass either."""
    from modules.runtime.devices import DeviceInfo

    if not isinstance(device, str):
        return device
    kind = device.split(":", 1)[0].lower()
    known = kind if kind in ("cuda", "mps", "xpu", "cpu") else "cuda"
    return DeviceInfo(known, device, device, None, known != "cpu", True)  # type: ignore[arg-type]


def _wants_attention_slicing(setting: AttentionSlicing, device: DeviceInfo) -> tuple[bool, str]:
    if setting != "auto":
        return bool(setting), ""
    if device.type == "mps":
        return True, " (auto: MPS)"
    if device.type != "cpu" and device.total_memory is not None and device.total_memory <= AUTO_SLICING_MAX_MEMORY:
        return True, f" (auto: {device.total_memory / 1024**3:.1f} GiB)"
    return False, " (auto)"


def _slice_size(pipe: Any) -> str:
    """diffusers' "auto" halves each attention's head dimension, which is 0 for a dimension of 1; use "max" then."""
    unet = getattr(pipe, "unet", None)
    modules = unet.modules() if hasattr(unet, "modules") else ()
    dims = [module.sliceable_head_dim for module in modules if hasattr(module, "sliceable_head_dim")]
    return "max" if any(dim < 2 for dim in dims) else "auto"


def _on_off(value: bool) -> str:
    return "on" if value else "off"


def _dtype_text(dtype: torch.dtype | None) -> str:
    return f", {str(dtype).removeprefix('torch.')}" if dtype is not None else ""


def apply_memory_options(
    pipe: Any, options: MemoryOptions, device: DeviceInfo | str, dtype: torch.dtype | None = None
) -> list[str]:
    """Apply ``options`` to a diffusers SD / SDXL pipeline and place it on ``device``; return what was done.

    Offloading keeps weights in CPU memory and moves them to the accelerator as they are used, so on the CPU it
    is meaningless and is skipped with a note rather than failing. Without offload the pipeline is moved to
    the device (and ``dtype``); with offload it is only cast, since the offload hooks own placement.
    """
    info = _device_info(device)
    lines: list[str] = []

    slicing, why = _wants_attention_slicing(options.attention_slicing, info)
    if slicing:
        pipe.enable_attention_slicing(_slice_size(pipe))  # "off" leaves the processors alone (disabling resets them)
    lines.append(f"attention slicing: {_on_off(slicing)}{why}")

    # The VAE's own methods: the pipeline-level enable_vae_* wrappers are deprecated in current diffusers.
    vae = pipe.vae
    if options.vae_slicing:
        vae.enable_slicing()
    else:
        vae.disable_slicing()
    lines.append(f"VAE slicing: {_on_off(options.vae_slicing)}")
    if options.vae_tiling:
        vae.enable_tiling()
    else:
        vae.disable_tiling()
    lines.append(f"VAE tiling: {_on_off(options.vae_tiling)}")

    sequential, model = options.sequential_cpu_offload, options.model_cpu_offload
    offload = None
    if info.type == "cpu":
        if sequential:
            lines.append("sequential CPU offload: skipped (--lowvram needs a GPU; running on the CPU)")
        if model:
            lines.append("model CPU offload: skipped (--medvram needs a GPU; running on the CPU)")
    elif sequential:
        offload = "sequential"
        if model:
            lines.append("model CPU offload: skipped (sequential CPU offload, --lowvram, takes precedence)")
    elif model:
        offload = "model"

    if offload is None:
        if dtype is not None and getattr(pipe, "dtype", None) != dtype:
            pipe.to(device=info.torch_device, dtype=dtype)
        else:
            pipe.to(info.torch_device)
        lines.append(f"device: {info.torch_device}{_dtype_text(dtype)}")
        if info.type == "cpu" and dtype is not None:
            from modules.models.precision import keep_vae_float32

            if keep_vae_float32(pipe.vae, dtype):  # bf16 banding shows in pixels; the VAE is a small share of time
                lines.append("VAE: float32 (decodes without bf16 banding)")
        return lines
    if dtype is not None and getattr(pipe, "dtype", None) != dtype:
        pipe.to(dtype=dtype)
    if offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=info.torch_device)
        lines.append("sequential CPU offload: on (--lowvram)")
    else:
        pipe.enable_model_cpu_offload(device=info.torch_device)
        lines.append("model CPU offload: on (--medvram)")
    lines.append(f"device: {info.torch_device}{_dtype_text(dtype)} (weights kept on the CPU between uses)")
    return lines


# --- usage ------------------------------------------------------------------------------------------------------


def memory_usage() -> dict[str, dict[str, Any]]:
    """RAM and CUDA memory in the shape of A1111's ``GET /sdapi/v1/memory``, which monitoring scripts read.

    Either half is ``{"error": ...}`` when it cannot be measured; measuring never raises.
    """
    return {"ram": _ram_usage(), "cuda": _cuda_usage()}


def _ram_usage() -> dict[str, Any]:
    """This process's resident memory against the machine's total (A1111 reports ``free`` as total - used)."""
    import os

    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        used = _resident_bytes()
    except (AttributeError, ValueError, OSError) as error:
        return {"error": str(error)}
    return {"free": total - used, "used": used, "total": total}


def _resident_bytes() -> int:
    try:
        import psutil
    except ImportError:
        import os

        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return int(psutil.Process().memory_info().rss)


def _cuda_usage() -> dict[str, Any]:
    try:
        import torch

        if not torch.cuda.is_available():
            return {"error": "unavailable"}
        free, total = torch.cuda.mem_get_info()
        stats = torch.cuda.memory_stats()
    except Exception as error:  # a driver hiccup must not fail a monitoring call
        return {"error": str(error)}

    def pair(name: str) -> dict[str, int]:
        return {"current": int(stats.get(f"{name}_bytes.all.current", 0)),
                "peak": int(stats.get(f"{name}_bytes.all.peak", 0))}

    return {
        "system": {"free": int(free), "used": int(total - free), "total": int(total)},
        "active": pair("active"),
        "allocated": pair("allocated"),
        "reserved": pair("reserved"),
        "inactive": pair("inactive_split"),
        "events": {"retries": int(stats.get("num_alloc_retries", 0)), "oom": int(stats.get("num_ooms", 0))},
    }
