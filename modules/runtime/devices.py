"""Which device to run on, and in which precision.

Detection is split in two so the rules can be tested without a GPU: ``probe_torch`` asks torch what this machine
has (a ``Hardware`` value), and ``select_device`` / ``dtype_for`` are pure functions of that value. Nothing is
cached: callers detect once at start-up and pass the result along.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

DeviceType = Literal["cuda", "rocm", "mps", "xpu", "cpu"]
Precision = Literal["auto", "full", "half", "bf16", "autocast"]
DtypeName = Literal["float32", "float16", "bfloat16"]
PRECISIONS: tuple[str, ...] = ("auto", "full", "half", "bf16", "autocast")
_AUTO = ("", "auto")


class DeviceUnavailableError(RuntimeError):
    """The device asked for (e.g. ``--device cuda:1``) is not present on this machine."""


@dataclass(frozen=True)
class DeviceInfo:
    """The device generation runs on. ``torch_device`` is the string torch takes ("cuda:0", "mps", "cpu")."""

    type: DeviceType
    torch_device: str
    name: str
    total_memory: int | None
    supports_fp16: bool
    supports_bf16: bool


@dataclass(frozen=True)
class Accelerator:
    """One accelerator as torch reports it."""

    name: str
    total_memory: int | None
    supports_bf16: bool


@dataclass(frozen=True)
class Hardware:
    """What torch can use on this machine. ``cuda`` also holds ROCm GPUs (torch exposes them as cuda)."""

    cuda: tuple[Accelerator, ...] = ()
    hip_version: str | None = None
    xpu: tuple[Accelerator, ...] = ()
    mps: Accelerator | None = None
    cpu_name: str = "cpu"
    cpu_memory: int | None = None
    cpu_bf16: bool = True


def _cpu_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _cuda_devices(torch_module) -> tuple[Accelerator, ...]:
    if not torch_module.cuda.is_available():
        return ()
    devices = []
    hip = getattr(torch_module.version, "hip", None)
    for index in range(torch_module.cuda.device_count()):
        props = torch_module.cuda.get_device_properties(index)
        # bf16 runs natively from Ampere (compute capability 8.0) on; ROCm reports it through torch.
        bf16 = torch_module.cuda.is_bf16_supported() if hip else props.major >= 8
        devices.append(Accelerator(props.name, int(props.total_memory), bool(bf16)))
    return tuple(devices)


def _xpu_devices(torch_module) -> tuple[Accelerator, ...]:
    xpu = getattr(torch_module, "xpu", None)
    if xpu is None or not xpu.is_available():
        return ()
    devices = []
    for index in range(xpu.device_count()):
        props = xpu.get_device_properties(index)
        bf16 = xpu.is_bf16_supported() if hasattr(xpu, "is_bf16_supported") else True
        devices.append(Accelerator(props.name, int(getattr(props, "total_memory", 0)) or None, bool(bf16)))
    return tuple(devices)


def _mps_device(torch_module) -> Accelerator | None:
    mps = getattr(torch_module.backends, "mps", None)
    if mps is None or not mps.is_available():
        return None
    try:
        memory = int(torch_module.mps.recommended_max_memory())
    except (AttributeError, RuntimeError):
        memory = None
    try:
        torch_module.ones(1, dtype=torch_module.bfloat16, device="mps")
        bf16 = True
    except (RuntimeError, TypeError):
        bf16 = False
    return Accelerator("Apple GPU (MPS)", memory, bf16)


def probe_torch() -> Hardware:
    """Ask torch which devices this machine has."""
    import torch

    return Hardware(
        cuda=_cuda_devices(torch),
        hip_version=getattr(torch.version, "hip", None),
        xpu=_xpu_devices(torch),
        mps=_mps_device(torch),
        cpu_name=platform.processor() or platform.machine() or "cpu",
        cpu_memory=_cpu_memory(),
    )


def _parse_preference(preference: str) -> tuple[str, int | None]:
    text = preference.strip().lower()
    kind, _, index = text.partition(":")
    if index:
        if not index.isdigit():
            raise ValueError(f"bad device {preference!r}: expected e.g. cpu, cuda, cuda:1, mps, xpu:0")
        return kind, int(index)
    return kind, None


def _indexed(kind: DeviceType, devices: tuple[Accelerator, ...], index: int | None, hardware: Hardware,
             asked: str) -> DeviceInfo:
    if not devices:
        raise DeviceUnavailableError(f"device {asked!r} was asked for but {_what_is_there(hardware)}")
    index = 0 if index is None else index
    if index >= len(devices):
        raise DeviceUnavailableError(f"device {asked!r} was asked for but there are only {len(devices)} "
                                     f"{kind} device(s) (index 0 to {len(devices) - 1})")
    found = devices[index]
    torch_kind = "xpu" if kind == "xpu" else "cuda"
    return DeviceInfo(kind, f"{torch_kind}:{index}", found.name, found.total_memory, True, found.supports_bf16)


def _what_is_there(hardware: Hardware) -> str:
    present = []
    if hardware.cuda:
        present.append(f"{len(hardware.cuda)} {'ROCm' if hardware.hip_version else 'CUDA'} GPU(s)")
    if hardware.xpu:
        present.append(f"{len(hardware.xpu)} XPU(s)")
    if hardware.mps:
        present.append("MPS")
    return "this machine has " + (", ".join(present) + " and the CPU" if present else "only the CPU")


def select_device(preference: str | None, hardware: Hardware) -> DeviceInfo:
    """The device for a preference ("auto"/None, "cpu", "cuda", "cuda:1", "rocm", "mps", "xpu:0") on ``hardware``.

    Auto order: CUDA/ROCm, XPU, MPS, CPU. A named device that is absent is an error, never a silent fallback,
    so a user who typed ``--device cuda:1`` does not wait minutes for a CPU render.
    """
    kind, index = _parse_preference(preference or "auto")
    gpu_kind: DeviceType = "rocm" if hardware.hip_version else "cuda"
    if kind in _AUTO:
        if hardware.cuda:
            return _indexed(gpu_kind, hardware.cuda, 0, hardware, "auto")
        if hardware.xpu:
            return _indexed("xpu", hardware.xpu, 0, hardware, "auto")
        kind = "mps" if hardware.mps else "cpu"
    if kind == "cpu":
        return DeviceInfo("cpu", "cpu", hardware.cpu_name, hardware.cpu_memory, False, hardware.cpu_bf16)
    if kind in ("cuda", "rocm"):
        if kind == "rocm" and hardware.cuda and not hardware.hip_version:
            raise DeviceUnavailableError(f"device {preference!r} was asked for but this torch build is CUDA, not ROCm")
        return _indexed(gpu_kind, hardware.cuda, index, hardware, preference or kind)
    if kind == "xpu":
        return _indexed("xpu", hardware.xpu, index, hardware, preference or kind)
    if kind == "mps":
        if hardware.mps is None:
            raise DeviceUnavailableError(f"device {preference!r} was asked for but {_what_is_there(hardware)}")
        mps = hardware.mps
        return DeviceInfo("mps", "mps", mps.name, mps.total_memory, True, mps.supports_bf16)
    raise ValueError(f"unknown device {preference!r}: expected auto, cpu, cuda[:N], rocm[:N], mps or xpu[:N]")


def detect_device(preference: str | None = None, hardware: Hardware | None = None) -> DeviceInfo:
    """The device to run on: ``preference`` if given (error if absent), else the best one present."""
    return select_device(preference, hardware if hardware is not None else probe_torch())


def dtype_for(device_type: str, precision: str = "auto", no_half: bool = False, bf16_ok: bool = False) -> DtypeName:
    """The weight dtype for a device type and A1111-style precision flags (pure, so testable without a GPU).

    - ``--no-half`` or ``full``: float32 everywhere (the user's escape hatch for NaN / black images).
    - CPU: float32 unless bf16 is asked for explicitly, because half-precision matmuls and convolutions on the
      CPU are slow or missing; ``half``/``autocast`` there fall back to float32 rather than failing.
    - GPUs (CUDA, ROCm, XPU, MPS): float16 for ``auto``/``half``/``autocast`` — half the memory and the fast
      tensor-core path, and what SD checkpoints are published in. ``autocast`` loads float16 weights too: a
      diffusers pipeline has no fp32-weights-with-fp16-compute mode worth its memory.
    - ``bf16``: bfloat16 where the device has it, else float32 (not float16: bf16 is asked for to avoid
      float16's overflow, so quietly falling back to float16 would bring back the black images).

    The VAE overflows in float16 on SDXL and some SD1 checkpoints; that is handled where the VAE decodes
    (diffusers upcasts it when ``vae.config.force_upcast`` is set, A1111's ``--no-half-vae``), not here.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    if no_half or precision == "full":
        return "float32"
    if precision == "bf16":
        return "bfloat16" if bf16_ok else "float32"
    if device_type == "cpu":
        return "float32"
    return "float16"


def choose_dtype(device: DeviceInfo, precision: str = "auto", no_half: bool = False) -> torch.dtype:
    """The torch dtype to load weights in on ``device`` (see ``dtype_for`` for the rules)."""
    import torch

    name = dtype_for(device.type, precision, no_half, device.supports_bf16)
    if name == "float16" and not device.supports_fp16:
        name = "float32"
    return getattr(torch, name)


# -- CPU threads -------------------------------------------------------------------------------------------------
def available_cpus() -> set[int]:
    """The logical CPUs this process may run on (its affinity mask: a container or ``taskset`` may allow fewer
    than the machine has)."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no affinity call
        return set(range(os.cpu_count() or 1))


def physical_cores(cpus: set[int] | None = None, topology: str | Path = "/sys/devices/system/cpu") -> int:
    """Physical cores among ``cpus`` (default: the available ones), at least 1.

    Hyper-threads share one core's arithmetic units, so one torch thread per *physical* core is what CPU
    inference gains from; more threads only contend. Two logical CPUs are one core when they share
    ``physical_package_id`` and ``core_id``; without that topology (not Linux) every logical CPU counts."""
    cpus = available_cpus() if cpus is None else cpus
    cores = set()
    for cpu in cpus:
        folder = Path(topology) / f"cpu{cpu}" / "topology"
        try:
            package = (folder / "physical_package_id").read_text().strip()
            core = (folder / "core_id").read_text().strip()
        except OSError:
            cores.add(("cpu", str(cpu)))
            continue
        cores.add((package, core))
    return max(1, len(cores))


def apply_threads(threads: int | None) -> int:
    """Set torch's CPU thread count (intra-op) when ``threads`` is given; the count torch now uses.

    Called once by the composition root's wiring (``build_services``), never at import: the number is a setting of
    the process, and a test that built services with none given keeps its own choice."""
    import torch

    if threads is not None:
        torch.set_num_threads(max(1, int(threads)))
    return torch.get_num_threads()
