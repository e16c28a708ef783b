"""Which device to run on, and in which precision.

Detection is split in two so the rules can be tested without a GPU: ``probe_torch`` asks torch what this machine
has (a ``Hardware`` value), and ``select_device`` / ``dtype_for`` are pure functions of that value. Nothing is
cached at module level: ``DeviceRuntime`` (one per set of services) decides once, on first use or in a background
thread started after the server answers, because asking torch costs its import (seconds) and start-up must not wait.
"""

from __future__ import annotations

import os
import platform
import threading
import time
from collections.abc import Callable
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
    native_bf16: bool = False  # a CPU with bf16 units (AVX-512 BF16 / AMX): bf16 is then its default


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
    cpu_flags: frozenset[str] = frozenset()


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
        cpu_flags=cpu_flags(),
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
        return DeviceInfo("cpu", "cpu", hardware.cpu_name, hardware.cpu_memory, False, hardware.cpu_bf16,
                          native_bf16=cpu_native_bf16(hardware.cpu_flags))
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


# -- CPU features -------------------------------------------------------------------------------------------------
# x86 flags (Linux /proc/cpuinfo names) that mean bf16 matmuls run in hardware: AVX-512 BF16 (Cooper Lake, Zen 4
# on) and AMX (Sapphire Rapids on). Without them torch emulates bf16 by converting to fp32, which is slower.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags as Linux lists them; empty where there is no /proc/cpuinfo (macOS, Windows), so
    those default to fp32 unless ``--precision`` says otherwise."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 says "flags", arm64 "Features"
            return frozenset(value.split())
    return frozenset()


def cpu_native_bf16(flags: frozenset[str] | set[str]) -> bool:
    """Whether the CPU computes bf16 natively (AVX-512 BF16 or AMX), the condition for bf16 by default."""
    return bool(NATIVE_BF16_FLAGS & set(flags))


def cpu_auto_dtype(flags: frozenset[str] | set[str]) -> DtypeName:
    """The CPU's default weight and compute dtype from its feature flags: bf16 halves the weights' memory and
    runs faster where the hardware has bf16 units; elsewhere emulated bf16 is slower than fp32, so fp32."""
    return "bfloat16" if cpu_native_bf16(flags) else "float32"


def dtype_for(device_type: str, precision: str = "auto", no_half: bool = False, bf16_ok: bool = False,
              cpu_auto: DtypeName = "float32") -> DtypeName:
    """The weight dtype for a device type and A1111-style precision flags (pure, so testable without a GPU).

    - ``--no-half`` or ``full``: float32 everywhere (the user's escape hatch for NaN / black images).
    - CPU: ``auto`` is ``cpu_auto`` (``cpu_auto_dtype`` of the CPU's flags: bfloat16 with native bf16, else
      float32); ``half``/``autocast`` there fall back to float32 rather than failing, because fp16 matmuls and
      convolutions on the CPU are slow or missing.
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
        return cpu_auto if precision == "auto" else "float32"
    return "float16"


def choose_dtype(device: DeviceInfo, precision: str = "auto", no_half: bool = False) -> torch.dtype:
    """The torch dtype to load weights in on ``device`` (see ``dtype_for`` for the rules)."""
    import torch

    cpu_auto = "bfloat16" if device.native_bf16 else "float32"
    name = dtype_for(device.type, precision, no_half, device.supports_bf16, cpu_auto)
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


# -- deciding on first use -----------------------------------------------------------------------------------------
DETECTING = "device: detecting… (torch loads with the first job, or a few seconds after start-up)"


# Below this many bytes of weights a model's layers are too narrow for bf16 to pay reliably on a CPU: conversions
# and reorders compete with the faster matmuls. Measured with bench/cpu_precision.py (Xeon with AMX, busy 2-core
# machine): the SD 1.5 UNet (3.4 GB fp32) ran 1.94x faster in bf16 (1 thread; 1.45x with 2); the embedded
# sfumato-shapes model (~8 MB UNet) ran 0.76-0.84x (slower) at batch 1, the UI's default, 1.05x at batch 4 and
# 2.3x at batch 16. bf16 also makes image i
# of a batch differ slightly from the same seed alone (fp32 matches bit for bit), which small models' users (and
# the test suite) rely on. Every real SD 1.x/2.x/XL checkpoint (>= 1 GB) is far above the line.
SMALL_MODEL_BYTES = 200 * 1024 * 1024


def model_dtype(dtype_name: DtypeName, cpu_auto_bf16: bool, weights_bytes: int | None) -> DtypeName:
    """The dtype one model loads in: the runtime's, except that a small model stays float32 when bf16 came only
    from the CPU's features (``--precision bf16`` is obeyed for every model)."""
    if cpu_auto_bf16 and weights_bytes is not None and weights_bytes < SMALL_MODEL_BYTES:
        return "float32"
    return dtype_name


def weights_bytes(path: str | Path) -> int | None:
    """Bytes of weights in a checkpoint file or a diffusers folder (its UNet's files), None if unreadable."""
    path = Path(path)
    try:
        if path.is_dir():
            folder = path / "unet" if (path / "unet").is_dir() else path
            return sum(item.stat().st_size for item in folder.rglob("*")
                       if item.suffix in (".safetensors", ".bin", ".ckpt", ".pt"))
        return path.stat().st_size
    except OSError:
        return None


@dataclass(frozen=True)
class RuntimeChoice:
    """The device, the weight dtype and the CPU threads the worker runs with, and why that dtype."""

    device: DeviceInfo
    dtype_name: DtypeName
    threads: int
    precision_reason: str
    cpu_auto_bf16: bool = False  # bf16 chosen by the CPU's features, not by --precision

    @property
    def dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, self.dtype_name)

    def dtype_for_model(self, path: str | Path) -> torch.dtype:
        """The dtype to load the checkpoint at ``path`` in (see ``model_dtype``)."""
        import torch

        return getattr(torch, model_dtype(self.dtype_name, self.cpu_auto_bf16, weights_bytes(path)))

    def report(self) -> list[str]:
        """Lines for Settings and ``/api/v1/system``."""
        return [f"device: {self.device.name} ({self.device.type}), dtype {self.dtype_name}",
                f"precision: {self.precision_reason}",
                f"CPU threads: {self.threads}"]


def precision_reason(device: DeviceInfo, precision: str, no_half: bool, dtype_name: str) -> str:
    """Why ``dtype_name`` was chosen, in words a user can act on (which flag changes it)."""
    if no_half or precision != "auto":
        flag = "--no-half" if no_half else f"--precision {precision}"
        return f"{dtype_name} ({flag})"
    if device.type != "cpu":
        return f"{dtype_name} (default on {device.type}; --precision full for float32)"
    if device.native_bf16:
        return (f"{dtype_name} weights and compute, VAE in float32 (the CPU has native bf16: AVX-512 BF16 or AMX); "
                "models under 200 MB stay float32, as bf16 is slower for them; --precision full for float32")
    return f"{dtype_name} (the CPU has no native bf16; --precision bf16 to force it)"


class DeviceRuntime:
    """Decides the device, dtype and torch threads once, when first asked, for one set of services.

    Start-up never asks (importing torch alone takes seconds): the first job does, or ``detect_in_background``
    after the server answers. Thread-safe; a failure (``--device cuda:1`` on a machine without it) is kept and
    raised to every caller, so each job says why it cannot run.
    """

    def __init__(self, device: str | None = None, precision: str = "auto", no_half: bool = False,
                 threads: int | None = None, probe: Callable[[], Hardware] = probe_torch) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
        _parse_preference(device or "auto")  # a malformed --device fails at start-up, before torch is needed
        self._wanted = (device, precision, no_half, threads)
        self._probe = probe
        self._lock = threading.Lock()
        self._choice: RuntimeChoice | None = None
        self._error: Exception | None = None
        self._thread: threading.Thread | None = None

    def get(self) -> RuntimeChoice:
        """The choice, deciding it now (imports torch) if nobody asked before."""
        with self._lock:
            if self._choice is None and self._error is None:
                try:
                    self._choice = self._decide()
                except (DeviceUnavailableError, ValueError, RuntimeError) as error:
                    self._error = error
            if self._error is not None:
                raise self._error
            assert self._choice is not None
            return self._choice

    def peek(self) -> RuntimeChoice | None:
        """The choice if already made, without deciding (never blocks on torch)."""
        return self._choice

    def report(self) -> list[str]:
        """What Settings and ``/api/v1/system`` show: the choice, "detecting…", or why detection failed."""
        if self._error is not None:
            return [f"device: unavailable ({self._error})"]
        return self._choice.report() if self._choice is not None else [DETECTING]

    def device_name(self) -> str:
        """The torch device string (``"cpu"``, ``"cuda:0"``); decides on first call."""
        return self.get().device.torch_device

    def detect_in_background(self, delay: float = 0.0) -> None:
        """Decide in a daemon thread (once), after ``delay`` seconds, so the first job does not wait for torch.

        Call it once the server answers, with a delay that lets a browser fetch the page first: the import holds
        the interpreter lock most of the time, so running it alongside the server's start or the page's first
        requests would slow exactly what the user waits for."""
        with self._lock:
            if self._choice is not None or self._error is not None or self._thread is not None:
                return
            self._thread = threading.Thread(target=self._detect_quietly, args=(delay,), name="sfumato-device",
                                            daemon=True)
            self._thread.start()

    def _detect_quietly(self, delay: float) -> None:
        time.sleep(delay)
        try:
            self.get()
        except Exception:  # kept in self._error: shown in the report and raised to the first job
            return

    def _decide(self) -> RuntimeChoice:
        preference, precision, no_half, threads = self._wanted
        device = select_device(preference, self._probe())
        dtype = choose_dtype(device, precision, no_half)
        name: DtypeName = str(dtype).removeprefix("torch.")  # type: ignore[assignment]
        auto_bf16 = device.type == "cpu" and precision == "auto" and not no_half and name == "bfloat16"
        return RuntimeChoice(device, name, apply_threads(threads), precision_reason(device, precision, no_half, name),
                             cpu_auto_bf16=auto_bf16)
