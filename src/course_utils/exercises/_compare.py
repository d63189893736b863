"""Compare a student's output with the reference and say, in one sentence, what differs.

The stages come in the order a student should fix them: type, dtype/device, shape,
NaN/inf, values. :func:`compare` returns ``None`` when the outputs agree, else a
:class:`Problem` naming the first stage that fails.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

Axes = Sequence[str] | None


@dataclass
class Problem:
    """The first thing that is wrong with an output."""

    stage: str    #: "type", "dtype", "device", "shape", "nan", "value"
    message: str  #: one or two short sentences


def type_name(obj: Any) -> str:
    """``torch.Tensor``, ``numpy.ndarray``, ``list`` ... for messages."""
    if isinstance(obj, torch.Tensor):
        return "torch.Tensor"
    if isinstance(obj, np.ndarray):
        return "numpy.ndarray"
    return type(obj).__name__


def article(noun: str) -> str:
    """``an int``, ``a list``."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def describe(obj: Any) -> str:
    """A short description of a value, never a wall of numbers."""
    if isinstance(obj, torch.Tensor):
        return f"tensor of shape {tuple(obj.shape)}"
    if isinstance(obj, torch.nn.Module):
        return f"{type(obj).__name__} module"
    if isinstance(obj, (list, tuple)):
        return f"{type_name(obj)} of {len(obj)}"
    try:
        text = repr(obj)
    except Exception:  # noqa: BLE001 - a student's class with a broken __repr__
        return f"{article(type_name(obj))} object"
    return text if len(text) <= 40 else text[:37] + "..."


def fmt_index(index: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(i)) for i in index) + "]"


def fmt_num(x: float | numbers.Real) -> str:
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, numbers.Integral):
        return f"{int(x):,}"
    return f"{float(x):.4g}"


def _prefix(where: str) -> str:
    return "" if where == "output" else f"{where}: "


def _wrong_type(expected: Any, got: Any, where: str) -> Problem:
    want = type_name(expected)
    p = _prefix(where)
    if got is None:
        return Problem("type", f"{p}your function returned None — did you forget the `return` statement?")
    if isinstance(expected, torch.Tensor):
        if isinstance(got, np.ndarray):
            hint = "keep the computation in torch (or wrap the result with torch.from_numpy)"
        elif isinstance(got, (list, tuple)):
            hint = "build one tensor (torch.stack / torch.cat) instead of a Python list"
        elif isinstance(got, numbers.Number):
            hint = f"return a tensor of shape {tuple(expected.shape)}, not a Python number"
        else:
            hint = f"return a tensor of shape {tuple(expected.shape)}"
        return Problem("type", f"{p}expected a torch.Tensor, got {article(type_name(got))} — {hint}.")
    if isinstance(got, torch.Tensor) and got.numel() == 1 and isinstance(expected, numbers.Number):
        return Problem("type", f"{p}expected a Python {want}, got a one-element tensor — use `.item()`.")
    if isinstance(expected, numbers.Integral) and isinstance(got, float) and float(got).is_integer():
        return Problem("type", f"{p}expected an int, got the float {got!r} — use integer arithmetic (or int(...)).")
    if isinstance(expected, (list, tuple)):
        return Problem("type", f"{p}expected {article(want)} of {len(expected)} items, got {describe(got)} "
                               f"({type_name(got)}).")
    shown = describe(got)
    extra = "" if shown.endswith(" object") else f" ({shown})"
    return Problem("type", f"{p}expected {article(want)}, got {article(type_name(got))}{extra}.")


def _shape_message(expected: tuple, got: tuple, axes: Axes, where: str) -> Problem:
    p = _prefix(where)
    if axes is not None and len(axes) == len(expected):
        exp_text = f"({', '.join(axes)}) = {expected}"
    else:
        axes = None
        exp_text = str(expected)
    msg = f"{p}wrong shape: expected {exp_text}, got {got}"
    name = (lambda i: f"`{axes[i]}` axis (dim {i})") if axes else (lambda i: f"dim {i}")
    hint = ""
    if len(got) == len(expected) and sorted(got) == sorted(expected):
        hint = "did you transpose the wrong axes?"
    elif len(got) == len(expected) - 1:
        for i in range(len(expected)):
            if expected[:i] + expected[i + 1:] == got:
                hint = f"the {name(i)} is missing — did you sum, index or squeeze it away?"
                break
    elif len(got) == len(expected) + 1:
        for i in range(len(got)):
            if got[:i] + got[i + 1:] == expected:
                hint = (f"there is an extra axis of size {got[i]} at dim {i}"
                        + (" — squeeze it (or drop keepdim=True)" if got[i] == 1 else ""))
                break
    elif len(got) == len(expected):
        pass
    if not hint and len(got) == len(expected):
        diffs = [i for i in range(len(got)) if got[i] != expected[i]]
        if len(diffs) == 1:
            i = diffs[0]
            hint = f"the {name(i)} has size {got[i]} instead of {expected[i]}"
    if not hint and math.prod(got) == math.prod(expected):
        hint = "same number of elements arranged differently — a reshape/view in the wrong order?"
    text = msg + (f" — {hint}" if hint else "")
    return Problem("shape", text if text.endswith("?") else text + ".")


def _compare_tensor(expected: torch.Tensor, got: Any, where: str, axes: Axes,
                    atol: float, rtol: float) -> Problem | None:
    p = _prefix(where)
    if not isinstance(got, torch.Tensor):
        return _wrong_type(expected, got, where)
    if got.dtype != expected.dtype:
        hint = ""
        if got.dtype == torch.float64 and expected.dtype == torch.float32:
            hint = " — a Python float, np.float64 or `.double()` made it double precision? Keep the input's dtype"
        elif expected.dtype.is_floating_point and not got.dtype.is_floating_point:
            hint = " — an integer or boolean result where floats were expected (integer division? a comparison?)"
        elif expected.dtype == torch.bool:
            hint = " — return a boolean mask (e.g. `scores > 0`), not numbers"
        elif not expected.dtype.is_floating_point and got.dtype.is_floating_point:
            hint = " — indices/counts must be integers (use `.long()` or integer ops)"
        return Problem("dtype", f"{p}wrong dtype: expected {expected.dtype}, got {got.dtype}{hint}.")
    if got.device != expected.device:
        return Problem("device", f"{p}wrong device: expected the output on {expected.device} (where the inputs are), "
                                 f"got {got.device} — keep the computation on the input's device (x.device).")
    if tuple(got.shape) != tuple(expected.shape):
        return _shape_message(tuple(expected.shape), tuple(got.shape), axes, where)
    got = got.detach()
    expected = expected.detach()
    if expected.is_floating_point() or expected.is_complex():
        bad = ~torch.isfinite(got) & torch.isfinite(expected)
        if bool(bad.any()):
            first = bad.nonzero()[0].tolist()
            kind = "NaN" if bool(torch.isnan(got[tuple(first)])) else "inf"
            count = int(bad.sum())
            return Problem("nan", f"{p}{kind} at {fmt_index(first)} ({count} non-finite value"
                                  f"{'s' if count > 1 else ''} in all) where the expected value is finite "
                                  "— a softmax over a row that is entirely -inf, a division by zero, "
                                  "or the log/sqrt of a negative number?")
        close = torch.isclose(got.double(), expected.double(), rtol=rtol, atol=atol, equal_nan=True)
        if bool(close.all()):
            return None
        diff = (got.double() - expected.double()).abs()
        diff = torch.where(close, torch.zeros_like(diff), diff).nan_to_num(nan=float("inf"))
        flat = int(diff.argmax())
        index = tuple(int(i) for i in np.unravel_index(flat, tuple(got.shape))) if got.dim() else ()
        n_bad = int((~close).sum())
        return Problem("value", f"{p}values differ from the reference: max |difference| {float(diff.max()):.3g} "
                                f"at {fmt_index(index)} (yours {fmt_num(got[tuple(index)].item())}, expected "
                                f"{fmt_num(expected[tuple(index)].item())}); {n_bad} of {got.numel()} values differ.")
    unequal = got != expected
    if not bool(unequal.any()):
        return None
    first = unequal.nonzero()[0].tolist() if got.dim() else []
    return Problem("value", f"{p}values differ from the reference: {int(unequal.sum())} of {got.numel()} differ, "
                            f"first at {fmt_index(first)} (yours {got[tuple(first)].item()}, expected "
                            f"{expected[tuple(first)].item()}).")


# Complexity allowed (C901): one branch per kind of expected value (tensor, bool, int, real, sequence,
# dict, other), each with the message a student reads.
def compare(expected: Any, got: Any, *, where: str = "output", axes: Any = None,  # noqa: C901
            atol: float = 1e-5, rtol: float = 1e-4) -> Problem | None:
    """``None`` if ``got`` matches ``expected``, else the first :class:`Problem`.

    ``axes`` names the dimensions of a tensor output, e.g. ``("batch", "heads", "seq", "seq")``;
    for a tuple output give one entry per element (a tuple of names, or None).
    """
    if isinstance(expected, torch.Tensor):
        return _compare_tensor(expected, got, where, axes, atol, rtol)
    if isinstance(expected, bool):
        if not isinstance(got, (bool, np.bool_)):
            return _wrong_type(expected, got, where)
        if bool(got) == expected:
            return None
        return Problem("value", f"{_prefix(where)}expected {expected}, got {bool(got)}.")
    if isinstance(expected, numbers.Integral):
        if isinstance(got, (bool, np.bool_)) or not isinstance(got, numbers.Integral):
            return _wrong_type(expected, got, where)
        if int(got) == int(expected):
            return None
        delta = int(got) - int(expected)
        return Problem("value", f"{_prefix(where)}expected {fmt_num(expected)}, got {fmt_num(got)} "
                                f"({fmt_num(abs(delta))} too {'many' if delta > 0 else 'few'}).")
    if isinstance(expected, numbers.Real):
        if isinstance(got, (bool, np.bool_)) or not isinstance(got, numbers.Real):
            return _wrong_type(expected, got, where)
        if math.isclose(float(got), float(expected), rel_tol=rtol, abs_tol=atol) or (
                math.isnan(float(got)) and math.isnan(float(expected))):
            return None
        if not math.isfinite(float(got)) and math.isfinite(float(expected)):
            return Problem("nan", f"{_prefix(where)}got {got} where a finite number ({fmt_num(expected)}) "
                                  "was expected.")
        return Problem("value", f"{_prefix(where)}expected {fmt_num(expected)}, got {fmt_num(got)} "
                                f"(difference {abs(float(got) - float(expected)):.3g}).")
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)):
            return _wrong_type(expected, got, where)
        if len(got) != len(expected):
            return Problem("type", f"{_prefix(where)}expected {len(expected)} items, got {len(got)}.")
        per_item_axes = (axes is not None and len(axes) == len(expected)
                         and all(a is None or isinstance(a, (tuple, list)) for a in axes))
        per_item = axes if per_item_axes else [None] * len(expected)
        for i, (e, g) in enumerate(zip(expected, got)):
            problem = compare(e, g, where=f"{where}[{i}]", axes=per_item[i], atol=atol, rtol=rtol)
            if problem is not None:
                return problem
        return None
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return _wrong_type(expected, got, where)
        if set(got) != set(expected):
            missing = sorted(map(str, set(expected) - set(got)))
            extra = sorted(map(str, set(got) - set(expected)))
            parts = ([f"missing keys {missing}"] if missing else []) + ([f"unexpected keys {extra}"] if extra else [])
            return Problem("type", f"{_prefix(where)}{'; '.join(parts)}.")
        for key in expected:
            problem = compare(expected[key], got[key], where=f"{where}[{key!r}]", atol=atol, rtol=rtol)
            if problem is not None:
                return problem
        return None
    if expected is None:
        return None if got is None else Problem("type", f"{_prefix(where)}expected None, got {describe(got)}.")
    if type(got) is not type(expected):
        return _wrong_type(expected, got, where)
    try:
        same = bool(got == expected)
    except Exception:  # noqa: BLE001 - a student's object with a broken __eq__
        same = False
    return None if same else Problem("value", f"{_prefix(where)}expected {describe(expected)}, got {describe(got)}.")


def clone(obj: Any) -> Any:
    """A deep copy of a case's inputs, so that the student's function gets its own."""
    import copy

    if isinstance(obj, torch.Tensor):
        out = obj.detach().clone()
        return out.requires_grad_(obj.requires_grad) if obj.is_leaf and obj.requires_grad else out
    if isinstance(obj, tuple):
        return tuple(clone(x) for x in obj)
    if isinstance(obj, list):
        return [clone(x) for x in obj]
    if isinstance(obj, dict):
        return {k: clone(v) for k, v in obj.items()}
    try:
        return copy.deepcopy(obj)
    except Exception:  # noqa: BLE001 - an object that cannot be copied is passed as is
        return obj


def same_input(before: Any, after: Any) -> bool:
    """Whether an input is unchanged (tensors element-wise, modules by their state dict)."""
    if isinstance(before, torch.Tensor):
        if not isinstance(after, torch.Tensor) or before.shape != after.shape or before.dtype != after.dtype:
            return False
        a, b = before.detach(), after.detach()
        return bool(((a == b) | (torch.isnan(a) & torch.isnan(b)) if a.is_floating_point() else (a == b)).all())
    if isinstance(before, torch.nn.Module):
        if not isinstance(after, torch.nn.Module):
            return False
        sa, sb = before.state_dict(), after.state_dict()
        return sa.keys() == sb.keys() and all(same_input(sa[k], sb[k]) for k in sa)
    if isinstance(before, (tuple, list)):
        return (isinstance(after, (tuple, list)) and len(before) == len(after)
                and all(same_input(a, b) for a, b in zip(before, after)))
    if isinstance(before, dict):
        return (isinstance(after, dict) and before.keys() == after.keys()
                and all(same_input(before[k], after[k]) for k in before))
    try:
        return bool(before == after)
    except Exception:  # noqa: BLE001 - a student's object with a broken __eq__: assume unchanged
        return True
