"""course_utils: the helper package of "Transformers, Inside Out".

Plumbing the chapters share (assets in both worlds, device and seeds, plots, checkers,
the course's own corpus and trained models). Code a reader learns from lives in the
chapter notebooks; a definition a later chapter reuses moves here, under the same name.
"""
from .runtime import banner, get_device, is_online, seed_everything, world

__all__ = ["banner", "get_device", "is_online", "seed_everything", "world"]
__version__ = "0.1.0"
