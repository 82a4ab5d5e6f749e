"""The machine fingerprint: what GPU and software produced a measurement.

``dnprof env`` prints it and every results file embeds it. Every device query is made here, lazily,
so that dnprof imports and runs on a machine without a GPU driver.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import importlib.util
import platform
import subprocess
from pathlib import Path
from typing import Any

import dnprof


def _package_version(name: str) -> str | None:
    """The installed version of a distribution, without importing it (fla-core needs a GPU to import)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """The commit of the dnprof checkout this code runs from, with ``-dirty`` for local changes."""
    root = Path(dnprof.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "") if sha else None


def _nvml_facts(index: int) -> dict[str, Any]:
    """Driver version and clocks through nvidia-ml-py, when it is installed and a driver answers."""
    try:
        import pynvml  # provided by nvidia-ml-py
    except ImportError:
        return {"nvml": "nvidia-ml-py is not installed"}
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError has many subclasses; any of them means no reading
        return {"nvml": f"unavailable: {exc}"}
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        facts: dict[str, Any] = {"driver": pynvml.nvmlSystemGetDriverVersion()}
        for key, clock in (("sm_clock_mhz", pynvml.NVML_CLOCK_SM), ("mem_clock_mhz", pynvml.NVML_CLOCK_MEM)):
            try:
                facts[key] = pynvml.nvmlDeviceGetClockInfo(handle, clock)
                facts["max_" + key] = pynvml.nvmlDeviceGetMaxClockInfo(handle, clock)
            except Exception:
                pass
        try:
            facts["power_limit_w"] = pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000
        except Exception:
            pass
        return facts
    finally:
        pynvml.nvmlShutdown()


def gpu_facts(index: int = 0) -> dict[str, Any] | None:
    """Facts about CUDA device ``index``, or None when no GPU is visible."""
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(index)
    facts: dict[str, Any] = {
        "name": props.name,
        "sm_count": props.multi_processor_count,
        "compute_capability": f"{props.major}.{props.minor}",
        "memory_gb": round(props.total_memory / 1e9, 1),
        "shared_memory_per_block_optin": getattr(props, "shared_memory_per_block_optin", None),
        "l2_cache_mb": round(getattr(props, "L2_cache_size", 0) / 2**20, 1) or None,
        "count": torch.cuda.device_count(),
    }
    facts.update(_nvml_facts(index))
    return facts


def fingerprint() -> dict[str, Any]:
    """Everything that identifies a measurement's machine and software, as JSON-safe values."""
    import torch

    return {
        "gpu": gpu_facts(),
        "cuda": torch.version.cuda,
        "torch": torch.__version__,
        "triton": _package_version("triton"),
        "dnprof": dnprof.__version__,
        "git_commit": git_commit(),
        "fla_core": _package_version("fla-core"),
        "flash_attn": _package_version("flash-attn") or _package_version("flash_attn"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def gpu_label(fp: dict[str, Any]) -> str:
    """A short, stable label for the GPU in a fingerprint (``"cpu"`` when there was none)."""
    gpu = fp.get("gpu")
    return str(gpu.get("name") or "unknown-gpu") if gpu else "cpu"
