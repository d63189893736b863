"""Run a student's code with a time limit, its prints captured, global state restored.

Why signals and not a thread or a subprocess: a thread cannot be stopped, so an infinite
loop would keep burning a core; a forked subprocess cannot use CUDA after the parent has
(Colab), and a fork of a Jupyter kernel's multi-threaded process can deadlock. A Jupyter
kernel (ipykernel 6/7), pytest and a plain script all run the check in the main thread,
where ``SIGALRM`` interrupts a Python loop or a ``sleep`` between two bytecodes. Where
there are no signals (Windows, a check called from another thread) we fall back to a
daemon thread: the notebook stays responsive, and the runaway thread is reported.
"""
from __future__ import annotations

import contextlib
import io
import signal
import sys
import threading
import time
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, Iterator, Union

import torch

if TYPE_CHECKING:
    from _typeshed import TraceFunction  # what sys.gettrace returns (typeshed's alias; no runtime module)


class CheckTimeout(BaseException):
    """Raised inside the student's code when its time is up (a BaseException, so that a
    student's ``except Exception`` does not swallow it)."""


@dataclass
class Outcome:
    """What happened when the student's code ran."""

    value: Any = None
    error: BaseException | None = None
    timed_out: bool = False
    seconds: float = 0.0
    printed: str = ""
    where: str | None = None  #: the student's line that raised, when known already (the grader's outcomes)


#: A signal handler as ``signal.signal`` takes and returns it.
_Handler = Union[Callable[[int, Union[FrameType, None]], Any], int, signal.Handlers, None]


def _signals_usable() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def _preserved_torch_state() -> Iterator[None]:
    """Undo global switches a student's function may flip (default dtype, grad mode)."""
    dtype, grad = torch.get_default_dtype(), torch.is_grad_enabled()
    try:
        yield
    finally:
        torch.set_default_dtype(dtype)
        torch.set_grad_enabled(grad)


def run_limited(fn: Callable[[], Any], timeout: float) -> Outcome:
    """Call ``fn()`` for at most ``timeout`` seconds; never raises (except ``KeyboardInterrupt``,
    so that the notebook's stop button keeps working)."""
    if _signals_usable():
        return _run_with_alarm(fn, timeout)
    return _run_in_thread(fn, timeout)


def _run_with_alarm(fn: Callable[[], Any], timeout: float) -> Outcome:
    out = Outcome()
    buffer = io.StringIO()
    finished = False

    fired = [0]
    old_trace = sys.gettrace()

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        fired[0] += 1
        if fired[0] > 4:  # 0.2 s of interruptions swallowed by a bare `except:` in a loop
            _raise_everywhere(frame)
        raise CheckTimeout()

    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    start = time.perf_counter()
    try:
        try:
            # The timer re-fires every 50 ms: a student's bare `except:` that swallows the
            # first interruption inside a loop gets another one.
            signal.setitimer(signal.ITIMER_REAL, timeout, 0.05)
            with _preserved_torch_state(), contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
                out.value = fn()
            finished = True
        finally:
            _disarm(old_handler, old_trace)
    except CheckTimeout:
        _disarm(old_handler, old_trace)
        out.timed_out = not finished
    except KeyboardInterrupt:
        _disarm(old_handler, old_trace)
        raise
    except BaseException as exc:  # noqa: BLE001 - anything the student's code raises, SystemExit included
        _disarm(old_handler, old_trace)
        out.error = exc
    out.seconds = time.perf_counter() - start
    out.printed = buffer.getvalue()
    return out


def _raise_everywhere(frame: FrameType | None) -> None:
    """Make every following line of every frame on the stack raise :class:`CheckTimeout`.

    A loop around ``try: ... except: pass`` catches each interruption; but an exception
    raised on the line of the ``except`` body itself is not caught by that ``try``, so the
    loop ends at its next turn.
    """
    def tracer(frame: FrameType, event: str, arg: object) -> TraceFunction:
        if event in ("line", "call"):  # raising on an "exception" event would be caught again
            raise CheckTimeout()
        return tracer

    sys.settrace(tracer)
    while frame is not None:
        frame.f_trace = tracer
        frame.f_trace_lines = True
        frame = frame.f_back


def _disarm(old_handler: _Handler, old_trace: TraceFunction | None = None) -> None:
    # A late alarm can arrive while we disarm; keep trying until the timer and tracer are off.
    while True:
        try:
            sys.settrace(old_trace)
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old_handler)
            _clear_frame_traces()
            return
        except CheckTimeout:
            continue


def _clear_frame_traces() -> None:
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if getattr(frame.f_trace, "__qualname__", "").startswith("_raise_everywhere"):
            frame.f_trace = None
        frame = frame.f_back


def _run_in_thread(fn: Callable[[], Any], timeout: float) -> Outcome:
    out = Outcome()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, who reports it
            box["error"] = exc

    start = time.perf_counter()
    with _preserved_torch_state():
        worker = threading.Thread(target=target, daemon=True, name="course-check")
        worker.start()
        worker.join(timeout)
    out.seconds = time.perf_counter() - start
    if worker.is_alive():
        out.timed_out = True  # the thread cannot be stopped; it is a daemon and dies with the kernel
    elif "error" in box:
        out.error = box["error"]
    else:
        out.value = box.get("value")
    return out
