"""Device limits that decide which variants can run: read from the GPU itself, never by its name.

On a machine with a CUDA GPU, :func:`read_device_limits` asks the device (Triton's driver
utilities, which report the opt-in shared memory per block and registers per block, and
``torch.cuda.get_device_properties`` for the rest). The named profiles below are stand-ins only
for *listing* a space on a machine without that GPU (``dnprof tune --list --device-profile a100``
on a laptop); they hold the vendor's published per-SM figures, and a real device always wins.

- ``h100``: H100 SXM (sm_90), 132 SMs, 227 KiB opt-in shared memory per block, 64 Ki registers.
- ``h200``: H200 (sm_90), the same SM as H100: 132 SMs, 227 KiB, 64 Ki registers.
- ``a100``: A100 (sm_80), 108 SMs, 163 KiB opt-in shared memory per block, 64 Ki registers.
- ``interpreter``: the Triton CPU interpreter, which has no shared memory or register file; its
  limits are set so that nothing is pruned by resources (the interpreter runs every tile).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

#: Registers one thread may use before the compiler spills (every NVIDIA GPU since Kepler).
MAX_REGS_PER_THREAD = 255


@dataclass(frozen=True)
class DeviceLimits:
    """What a kernel launch may use on one device, and where the figures came from."""

    name: str
    compute_capability: str  # "9.0"; "interpreter" for the CPU interpreter
    sm_count: int
    smem_per_block: int  # bytes, the opt-in maximum a kernel may request
    regs_per_sm: int
    regs_per_thread: int = MAX_REGS_PER_THREAD
    max_threads_per_block: int = 1024
    source: str = "device"  # "device" or "profile:<name>"

    @property
    def is_interpreter(self) -> bool:
        return self.compute_capability == "interpreter"

    @property
    def major(self) -> int:
        """The compute capability's major number (0 for the interpreter)."""
        return 0 if self.is_interpreter else int(self.compute_capability.split(".")[0])

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of the fields."""
        return asdict(self)


PROFILES: dict[str, DeviceLimits] = {
    "h100": DeviceLimits("NVIDIA H100 80GB HBM3 (profile)", "9.0", 132, 232448, 65536, source="profile:h100"),
    "h200": DeviceLimits("NVIDIA H200 (profile)", "9.0", 132, 232448, 65536, source="profile:h200"),
    "a100": DeviceLimits("NVIDIA A100-SXM4-80GB (profile)", "8.0", 108, 166912, 65536, source="profile:a100"),
    "interpreter": DeviceLimits("Triton interpreter (CPU)", "interpreter", 1, 1 << 30, 1 << 30, 1 << 20, 1 << 20,
                                source="profile:interpreter"),
}


def read_device_limits(index: int = 0) -> DeviceLimits:
    """The limits of CUDA device ``index``, read from the device (RuntimeError without one)."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA GPU is visible")
    props = torch.cuda.get_device_properties(index)
    smem = getattr(props, "shared_memory_per_block_optin", None)
    regs = getattr(props, "regs_per_multiprocessor", None)
    max_threads = getattr(props, "max_threads_per_block", None) or 1024
    try:  # Triton's own view (the numbers its compiler checks against)
        from triton.runtime import driver

        tp = driver.active.utils.get_device_properties(index)
        smem = tp.get("max_shared_mem") or smem
        regs = regs or tp.get("max_num_regs")
    except Exception:
        pass
    if not smem or not regs:
        raise RuntimeError(f"could not read shared memory / registers of {props.name} from the driver")
    return DeviceLimits(name=props.name, compute_capability=f"{props.major}.{props.minor}",
                        sm_count=props.multi_processor_count, smem_per_block=int(smem), regs_per_sm=int(regs),
                        max_threads_per_block=int(max_threads), source="device")


def device_limits(profile: str | None = None, device: str = "cuda") -> DeviceLimits:
    """Limits for listing or tuning: the named profile, the interpreter for ``cpu``, else the local GPU.

    Without a profile on a machine with no GPU the H100 profile stands in (listing only).
    """
    if profile:
        try:
            return PROFILES[profile.lower()]
        except KeyError:
            raise ValueError(f"device profile must be one of {sorted(PROFILES)}, got {profile!r}") from None
    if device == "cpu":
        return PROFILES["interpreter"]
    try:
        return read_device_limits()
    except RuntimeError:
        return PROFILES["h100"]
