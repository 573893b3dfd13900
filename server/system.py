"""``GET /system_stats``: the machine's memory and the compute device, in ComfyUI's shape."""

from __future__ import annotations

import importlib.metadata
import os
import sys

FRONTEND_PACKAGE = "comfyui-frontend-package"
FRONTEND_VERSION = "1.58.1"  # the version pyproject pins; the frontend warns when it is older


def version() -> str:
    try:
        return importlib.metadata.version("comfyui-wanrt")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def ram() -> tuple[int, int]:
    """``(total, available)`` bytes of system memory: /proc/meminfo, else sysconf, else zeros."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f if line.strip()}
        return fields["MemTotal"], fields.get("MemAvailable", fields.get("MemFree", 0))
    except (OSError, KeyError, ValueError, IndexError):
        pass
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        total = page * os.sysconf("SC_PHYS_PAGES")
        try:
            available = page * os.sysconf("SC_AVPHYS_PAGES")
        except (ValueError, OSError):
            available = 0
        return total, available
    except (ValueError, OSError, AttributeError):
        return 0, 0


def device_stats(device) -> dict:
    """One ``devices`` entry. An accelerator reports its own memory (``mem_get_info``) and what
    torch holds of it; the CPU reports system memory, as ComfyUI does."""
    import torch

    entry = {"name": str(device), "type": device.type, "index": device.index}
    if device.type == "cpu":
        total, free = ram()
        return {**entry, "vram_total": total, "vram_free": free, "torch_vram_total": total,
                "torch_vram_free": free}
    backend = getattr(torch, device.type, None)
    total = free = reserved = allocated = 0
    if hasattr(backend, "mem_get_info"):
        free, total = backend.mem_get_info(device)
    if hasattr(backend, "memory_reserved"):
        reserved, allocated = backend.memory_reserved(device), backend.memory_allocated(device)
    if hasattr(backend, "get_device_name"):
        entry["name"] = f"{device} {backend.get_device_name(device)}"
    return {**entry, "vram_total": total, "vram_free": free, "torch_vram_total": reserved,
            "torch_vram_free": reserved - allocated}


def system_stats(device) -> dict:
    import torch

    total, free = ram()
    return {
        "system": {
            "os": sys.platform,
            "ram_total": total,
            "ram_free": free,
            "comfyui_version": f"WanRT {version()}",
            "required_frontend_version": FRONTEND_VERSION,
            "installed_templates_version": "",
            "required_templates_version": "",
            "python_version": sys.version,
            "pytorch_version": torch.__version__,
            "embedded_python": False,
            "argv": sys.argv,
        },
        "devices": [device_stats(device)],
    }
