"""Plain data between a student's kernel and the grader: JSON for the structure, safetensors
for the tensors -- never pickle.

The kernel (untrusted) turns what a student's function returned into plain data with
:func:`encode`; the grader reads it back with :func:`decode`, which only ever builds
``None``/bool/int/float/str, lists, tuples, dicts, base-class ``torch.Tensor`` (from
safetensors) and ``numpy.ndarray``. Whatever the student's object was -- a tensor subclass
with its own ``__torch_function__``, an ``__eq__`` that is always True -- the grader compares
numbers it decoded itself, in a process where none of the student's code exists. An object
that is none of these arrives as :class:`Opaque` (its type name and a short ``repr``), and
compares equal to nothing.

Node format (JSON): plain JSON values stand for themselves (strings, ints, floats, bools,
null); everything else is ``{"t": kind, ...}`` with kind one of ``list``, ``tuple``, ``dict``
(``"v": [[key, value], ...]``), ``tensor`` and ``ndarray`` (``"k"``: the safetensors key,
``"device"``), ``npscalar`` (``"dtype"``, ``"v"``), ``module`` (``"type"``, ``"state"``: its
state dict) and ``object`` (``"type"``, ``"repr"``).
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

MAX_NODES = 200_000          #: a returned structure larger than this is cut (and says so)
MAX_JSON_BYTES = 32_000_000  #: the grader refuses larger JSON files
MAX_TENSOR_BYTES = 512_000_000


class Opaque:
    """An object the grader cannot rebuild: only its type name and a short repr survive."""

    type_name = "object"

    def __init__(self, type_name: str, text: str) -> None:
        self.type_name = type_name
        self.text = text

    def __repr__(self) -> str:
        return self.text

    def __eq__(self, other: object) -> bool:
        return False

    __hash__ = object.__hash__


_NAME = re.compile(r"[^A-Za-z0-9_.]")


def safe_name(name: Any) -> str:
    text = _NAME.sub("_", str(name))[:60]
    return text or "object"


def opaque(type_name: str, text: str) -> Opaque:
    """An :class:`Opaque` whose ``type(obj).__name__`` is ``type_name`` (for messages)."""
    cls = type(safe_name(type_name).split(".")[-1] or "object", (Opaque,), {})
    return cls(type_name, str(text)[:200])


# --------------------------------------------------------------------------- kernel side

class Encoder:
    """Turns values into JSON trees; every tensor goes into ``tensors`` (one safetensors file).

    ``top(obj)`` encodes one value with its own size budget; ``top(obj, inputs=True)`` encodes
    a function's inputs to see in-place changes, where a read-only mapping (not a dict, e.g. a
    30,000-token vocabulary) is only named: it cannot have been changed, and is big."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self.nodes = 0
        self.inputs = False

    def top(self, obj: Any, inputs: bool = False) -> Any:
        self.nodes, self.inputs = 0, inputs
        return self(obj)

    def tensor(self, t: torch.Tensor, kind: str = "tensor") -> dict[str, Any]:
        # Read the raw storage of the base class: a subclass's __torch_function__ is not consulted.
        with torch._C.DisableTorchFunctionSubclass():
            device = str(t.device)
            data = torch.Tensor.detach(t)
            if data.device.type == "meta":
                return {"t": "object", "type": "torch.Tensor (meta device)", "repr": f"meta tensor {tuple(t.shape)}"}
            data = torch.Tensor.contiguous(torch.Tensor.cpu(data)).clone()
        data = data.as_subclass(torch.Tensor) if type(data) is not torch.Tensor else data
        key = f"t{len(self.tensors)}"
        self.tensors[key] = data
        return {"t": kind, "k": key, "device": device}

    # Complexity allowed (C901): one branch per kind of value the encoder accepts (the format's table);
    # the order matters (bool before int, dict before Mapping).
    def __call__(self, obj: Any, depth: int = 0) -> Any:  # noqa: C901
        self.nodes += 1
        if self.nodes > MAX_NODES or depth > 50:
            return {"t": "object", "type": "too large", "repr": "a structure too large or too deeply nested"}
        if obj is None or type(obj) in (bool, str):
            return obj
        if isinstance(obj, bool):
            return bool(obj)
        if isinstance(obj, int):
            return int.__int__(obj)
        if isinstance(obj, float):
            return float.__float__(obj)
        if isinstance(obj, str):
            return str.__str__(obj)
        if isinstance(obj, torch.Tensor):
            if obj.is_sparse or obj.is_quantized or obj.is_nested:
                return {"t": "object", "type": "torch.Tensor (sparse/quantized/nested)", "repr": "special tensor"}
            return self.tensor(obj)
        if isinstance(obj, np.ndarray):
            if obj.dtype == object or not obj.dtype.isnative:
                return {"t": "object", "type": "numpy.ndarray (object)", "repr": "numpy array of objects"}
            return self.tensor(torch.from_numpy(np.ascontiguousarray(obj)), "ndarray")
        if isinstance(obj, np.generic):
            value = obj.item()
            if isinstance(value, (bool, int, float)):
                return {"t": "npscalar", "dtype": str(obj.dtype), "v": value}
            return {"t": "object", "type": f"numpy.{type(obj).__name__}", "repr": repr(value)[:200]}
        if isinstance(obj, tuple):
            return {"t": "tuple", "v": [self(x, depth + 1) for x in tuple.__iter__(obj)]}
        if isinstance(obj, list):
            return {"t": "list", "v": [self(x, depth + 1) for x in list.__iter__(obj)]}
        if isinstance(obj, dict):
            return {"t": "dict", "v": [[self(k, depth + 1), self(v, depth + 1)] for k, v in dict.items(obj)]}
        if isinstance(obj, Mapping) and self.inputs:
            return {"t": "object", "type": "read-only mapping", "repr": type(obj).__name__}
        if isinstance(obj, Mapping):  # a read-only vocabulary, a config ...: its items
            try:
                items = [[self(k, depth + 1), self(obj[k], depth + 1)] for k in list(obj)[:MAX_NODES]]
            except Exception:  # noqa: BLE001 - a student's mapping that fails to iterate
                items = None
            if items is not None:
                return {"t": "dict", "v": items}
        if isinstance(obj, torch.nn.Module):
            try:
                state = dict(obj.state_dict())
            except Exception:  # noqa: BLE001 - a student's module with a broken state_dict
                state = {}
            return {"t": "module", "type": type(obj).__name__, "state": self(state, depth + 1)}
        try:
            text = repr(obj)
        except Exception:  # noqa: BLE001 - a broken __repr__
            text = f"{type(obj).__name__} object"
        return {"t": "object", "type": type(obj).__name__, "repr": text[:200]}


def encode(obj: Any, inputs: bool = False) -> tuple[Any, dict[str, torch.Tensor]]:
    """``(json_tree, tensors)``: ``obj`` as plain data (used in the student's kernel)."""
    enc = Encoder()
    tree = enc.top(obj, inputs)
    return tree, enc.tensors


def save(path_stem: Path, document: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Write ``<stem>.json`` and ``<stem>.safetensors`` (the JSON last: its presence means done)."""
    from safetensors.torch import save_file

    save_file(tensors, str(path_stem.with_suffix(".safetensors")))
    tmp = path_stem.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, allow_nan=True), encoding="utf-8")
    tmp.replace(path_stem.with_suffix(".json"))


# --------------------------------------------------------------------------- grader side

class PlainError(ValueError):
    """The kernel's answer is not well-formed plain data."""


def read_own_file(folder: Path, name: str, limit: int) -> bytes:
    """The bytes of ``folder/name``, read only if it is a regular file of its own there.

    The folder is the kernel's exchange folder, which the kernel can write: it could put a
    symbolic link there (to another submission's answer), a hard link, a FIFO (which would
    block the reader) or a folder. Neither ``folder`` nor ``name`` is followed if it is a
    link, the file must be a regular file with one link, and at most ``limit`` bytes are read.
    Raises :class:`PlainError` otherwise."""
    import os
    import stat

    if "/" in name or name in ("", ".", ".."):
        raise PlainError(f"bad answer file name {name!r}")
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    try:
        dir_fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | nofollow | os.O_CLOEXEC)
    except OSError:
        raise PlainError("the answer folder is not the grader's own folder (a link?)") from None
    try:
        try:
            fd = os.open(name, os.O_RDONLY | nofollow | getattr(os, "O_NONBLOCK", 0) | os.O_CLOEXEC, dir_fd=dir_fd)
        except FileNotFoundError:
            raise PlainError("no answer was written") from None
        except OSError:
            raise PlainError(f"the answer {name} is not a regular file (a link?); it was not read") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise PlainError(f"the answer {name} is not a regular file; it was not read")
            if info.st_nlink != 1:
                raise PlainError(f"the answer {name} has {info.st_nlink} names (a hard link?); it was not read")
            if info.st_size > limit:
                raise PlainError("the answer is too large")
            chunks, size = [], 0
            while size <= limit:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            if size > limit:
                raise PlainError("the answer is too large")
            return b"".join(chunks)
        finally:
            os.close(fd)
    finally:
        os.close(dir_fd)


def load(path_stem: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read what :func:`save` wrote, with size limits and :func:`read_own_file`'s checks
    (never through a link); raises :class:`PlainError`."""
    from safetensors.torch import load as load_tensors

    folder, stem = path_stem.parent, path_stem.name
    raw_json = read_own_file(folder, stem + ".json", MAX_JSON_BYTES)
    raw_tensors = read_own_file(folder, stem + ".safetensors", MAX_TENSOR_BYTES)
    try:
        document = json.loads(raw_json.decode("utf-8"))
        tensors = load_tensors(raw_tensors)
    except Exception as exc:  # noqa: BLE001 - anything malformed
        raise PlainError(f"the answer could not be read ({type(exc).__name__})") from None
    if not isinstance(document, dict):
        raise PlainError("the answer is not a JSON object")
    return document, tensors


# Complexity allowed (C901): the inverse of Encoder.__call__, one branch per kind, each checking the
# untrusted input before it is used.
def decode(tree: Any, tensors: dict[str, torch.Tensor], depth: int = 0) -> Any:  # noqa: C901
    """Rebuild plain Python/torch/numpy values from :func:`encode`'s output (grader side)."""
    if depth > 60:
        raise PlainError("nested too deeply")
    if tree is None or type(tree) in (bool, int, str):
        return tree
    if type(tree) is float:
        return tree
    if type(tree) is not dict:
        raise PlainError(f"unexpected node {type(tree).__name__}")
    kind = tree.get("t")
    if kind in ("list", "tuple"):
        items = tree.get("v")
        if type(items) is not list:
            raise PlainError("malformed sequence")
        out = [decode(x, tensors, depth + 1) for x in items]
        return out if kind == "list" else tuple(out)
    if kind == "dict":
        pairs = tree.get("v")
        if type(pairs) is not list:
            raise PlainError("malformed dict")
        result: dict[Any, Any] = {}
        for pair in pairs:
            if type(pair) is not list or len(pair) != 2:
                raise PlainError("malformed dict item")
            key = decode(pair[0], tensors, depth + 1)
            try:
                hash(key)
            except TypeError:
                key = repr(key)
            result[key] = decode(pair[1], tensors, depth + 1)
        return result
    if kind in ("tensor", "ndarray"):
        t = tensors.get(str(tree.get("k")))
        if type(t) is not torch.Tensor:
            raise PlainError("missing tensor")
        device = str(tree.get("device", "cpu"))
        if kind == "ndarray":
            return t.numpy()
        if device != "cpu":
            try:
                t = t.to(device)
            except Exception:  # noqa: BLE001 - a device the grader does not have
                return opaque(f"torch.Tensor on {device}", f"tensor of shape {tuple(t.shape)} on {device}")
        return t
    if kind == "npscalar":
        value = tree.get("v")
        try:
            dtype = np.dtype(str(tree.get("dtype")))
        except TypeError:
            raise PlainError("bad numpy dtype") from None
        if type(value) not in (bool, int, float) or dtype.kind not in "biuf":
            raise PlainError("bad numpy scalar")
        return dtype.type(value)
    if kind == "module":
        state = decode(tree.get("state"), tensors, depth + 1)
        return opaque(str(tree.get("type")), f"{tree.get('type')} module") if not isinstance(state, dict) else \
            ModuleState(str(tree.get("type")), state)
    if kind == "object":
        return opaque(str(tree.get("type", "object")), str(tree.get("repr", "")))
    raise PlainError(f"unknown node kind {kind!r}")


class ModuleState(dict):
    """A ``torch.nn.Module`` as the grader sees it: its class name and state dict."""

    def __init__(self, type_name: str, state: dict[str, Any]) -> None:
        super().__init__(state)
        self.type_name = type_name


def roundtrip(obj: Any, inputs: bool = False) -> Any:
    """``decode(encode(obj))`` in one process: the grader's own values in the same plain form
    as the student's, so that both sides are compared alike."""
    tree, tensors = encode(obj, inputs)
    tensors = {k: v.clone() for k, v in tensors.items()}
    return decode(json.loads(json.dumps(tree, allow_nan=True)), tensors)

