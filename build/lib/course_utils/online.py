"""Which world a notebook runs in: online (the Hugging Face hub answers) or offline.

One job, and no dependency on the rest of the package: :mod:`course_utils.assets` asks it
which files to load, :mod:`course_utils.runtime` puts the answer in the banner.
"""
from __future__ import annotations

import os
import socket
import threading
from functools import lru_cache

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
