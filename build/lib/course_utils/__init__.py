"""course_utils: the helper package of "Transformers, Inside Out".

Plumbing the chapters share (assets in both worlds, device and seeds, plots, checkers,
the course's own corpus and trained models). Code a reader learns from lives in the
chapter notebooks; a definition a later chapter reuses moves here, under the same name.
"""
import warnings

# Quiet, honest notebooks: tqdm warns when ipywidgets is absent (we keep it absent on purpose:
# widget progress bars need JavaScript from a CDN in the static site), and transformers' own
# "Loading weights" bars say nothing the banner does not.
warnings.filterwarnings("ignore", message="IProgress not found")
try:
    from transformers.utils import logging as _hf_logging

    _hf_logging.disable_progress_bar()
except ImportError:  # pragma: no cover - transformers is a dependency
    pass

from .online import is_online, world  # noqa: E402 - after the filters above
from .runtime import banner, get_device, seed_everything  # noqa: E402 - after the filters above

__all__ = ["banner", "get_device", "is_online", "seed_everything", "world"]
__version__ = "0.1.0"
