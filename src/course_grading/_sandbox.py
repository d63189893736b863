"""Start a student's kernel with no network and nothing of the grader's in sight (Linux).

``python -m course_grading._sandbox --report FILE --cwd DIR --rw DIR ... --hide DIR ...
--ro DIR ... --mask DIR ... -- COMMAND ...`` runs COMMAND (the kernel) in new mount, network,
IPC and PID namespaces:

* the whole file system is read-only, except the ``--rw`` folders (its own working folder and
  the grader's exchange folder); ``/tmp``, ``/var/tmp``, ``/dev/shm`` and ``/run`` are empty
  (except the ``--ro`` folders under them: where Python finds its packages, the model cache);
* every ``--hide`` folder (the submissions, the grader's output and working folders) is
  covered by an empty one: other students' notebooks and results cannot be read or written;
* every ``--mask`` folder (the grading package, which sits on an import path next to
  course_utils) is covered after the import paths come back: ``import course_grading`` fails;
* no network interface but a loopback that is down (the kernel talks to the grader over
  Unix sockets in its exchange folder);
* its own PID namespace: the grader's processes cannot be seen, signalled or traced;
* it runs without any privilege, in a nested user namespace that locks the mounts above
  (as the grader's own user id, seen from outside: it can read what the grader can read,
  outside the hidden folders, and write nothing but its own folders).

It needs user namespaces: as root always, as another user where unprivileged user
namespaces are enabled (most Linux distributions). Where namespaces are not available (macOS, Windows,
a container without the privilege) it runs the kernel in its working folder without them
and says so in the report; ``--require`` makes that an error instead.
The report (JSON) is written before the kernel starts, where the kernel cannot see it.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import sys

try:
    import resource  # imported before isolation hides where it lives
except ImportError:  # Windows
    resource = None  # type: ignore[assignment]
from typing import Any, Sequence

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME, MS_STRICTATIME = 1024, 2048, 1 << 21, 1 << 24
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
#: Top-level folders of the system, kept (read-only); every other one is hidden.
SYSTEM_FOLDERS = frozenset({"usr", "lib", "lib32", "lib64", "libx32", "bin", "sbin", "etc", "dev", "proc", "sys",
                            "run", "tmp", "var"})
SCRATCH_SIZE = "64m"  #: the kernel's empty /tmp, /var/tmp, /dev/shm, /run (in memory)
_FLAG_OF = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
            "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME}

_libc: Any = None


def _c() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _unshare(flags: int) -> None:
    _check(_c().unshare(flags), "unshare")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def enc(s: str | None) -> bytes | None:
        return None if s is None else s.encode()

    _check(_c().mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def _mount_points() -> list[tuple[str, int]]:
    """(mount point, flags to keep) of every mount, shallowest first."""
    points = []
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            fields = line.split()
            point = fields[4].replace("\\040", " ")
            flags = 0
            for option in fields[5].split(","):
                flags |= _FLAG_OF.get(option, 0)
            points.append((point, flags))
    return sorted(points, key=lambda p: p[0].count("/"))


def _system_or_above(path: str) -> bool:
    """``/`` or a system folder (or a folder above one): never covered."""
    path = path.rstrip("/") or "/"
    return path == "/" or any(("/" + name + "/").startswith(path + "/") for name in SYSTEM_FOLDERS)


def _hide(path: str, mode: str = "0755", size: str = "16m") -> None:
    _mount("none", path, "tmpfs", MS_NOSUID | MS_NODEV, f"mode={mode},size={size}")


def _bind_rw(fd: int, path: str) -> None:
    os.makedirs(path, exist_ok=True)
    _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND)
    _mount(None, path, None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV)


def _bind_ro(fd: int, path: str) -> None:
    os.makedirs(path, exist_ok=True)
    _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
    _mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


# Complexity allowed (C901): the isolation set up in the order the mounts must happen (namespaces, scratch,
# top-level folders, hidden, read-only, masked); one sequence, read top to bottom, is easier to audit.
def isolate(rw: list[str], hide: list[str], report: dict[str, Any], ro: Sequence[str] = (),  # noqa: C901
            mask: Sequence[str] = ()) -> bool:
    """Enter the namespaces and set up the mounts (in this process); False if unavailable.

    ``mask``: folders covered after the ``ro`` folders come back (a folder inside one of them,
    such as the grading package next to course_utils on an import path). A package folder is
    covered by one whose ``__init__`` raises ImportError (an empty folder would still import,
    as a namespace package)."""
    if not sys.platform.startswith("linux"):
        report["problems"].append(f"no namespaces on {sys.platform}")
        return False
    root = os.geteuid() == 0
    uid, gid = os.geteuid(), os.getegid()
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWPID | CLONE_NEWUTS
    try:
        _unshare(flags | (0 if root else CLONE_NEWUSER))
    except OSError as exc:
        report["problems"].append(f"namespaces unavailable ({exc.strerror or exc})")
        return False
    if not root:
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"0 {uid} 1")
        _write("/proc/self/gid_map", f"0 {gid} 1")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    # Opened in the new mount namespace, so that they can be bound back after the hiding.
    fds = {path: os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) for path in rw}
    ro_fds = {path: os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) for path in ro if os.path.isdir(path)}
    readonly_failed = []
    for point, keep in _mount_points():
        try:
            _mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | keep)
        except OSError:
            readonly_failed.append(point)
    if readonly_failed:
        report["problems"].append(f"could not make read-only: {', '.join(readonly_failed[:5])}")
    # Shared scratch space (other users' and other grading runs' files) is emptied; /run holds
    # system sockets (D-Bus, Docker ...). So is every top-level folder that is not part of the
    # system (/home, /root, /work, /opt ...: checkouts, instructors' files, earlier results).
    # What the kernel needs to import from there (the interpreter, a venv, the installed
    # packages, the model cache: the --ro paths) comes back read-only, then the --hide folders
    # (the submissions, the grader's folders, the checkout) are covered first, so that only an
    # import path inside one of them comes back. Hidden folders are read-only and empty.
    scratch = [p for p in ["/tmp", "/var/tmp", "/dev/shm", "/run"] if os.path.isdir(p) and not os.path.islink(p)]
    for path in scratch:
        _hide(path, "1777", size=SCRATCH_SIZE)
    covered = []
    for name in sorted(os.listdir("/")):
        path = "/" + name
        if name in SYSTEM_FOLDERS or os.path.islink(path) or not os.path.isdir(path) or path in scratch:
            continue
        try:
            _hide(path)
            covered.append(path)
        except OSError:
            report["problems"].append(f"could not hide {path}")
    for path in hide:
        if os.path.isdir(path) and not _system_or_above(path):
            _hide(path)
            covered.append(path)
    for path, fd in sorted(ro_fds.items(), key=lambda item: item[0].count("/")):  # shallowest first
        if not os.path.isdir(path):  # under an emptied folder: bring it back
            _bind_ro(fd, path)
        os.close(fd)
    for path, fd in fds.items():
        _bind_rw(fd, path)
        os.close(fd)
    for path in mask:  # a package there becomes one whose import fails, saying why
        if os.path.isdir(path) and not _system_or_above(path):
            package = os.path.isfile(os.path.join(path, "__init__.py"))
            try:
                _hide(path, size="1m")
                if package:
                    _write(os.path.join(path, "__init__.py"),
                           f"raise ImportError({os.path.basename(path)!r} ' is not available in a graded kernel')\n")
                covered.append(path)
            except OSError:
                report["problems"].append(f"could not hide {path}")
    for path in covered:  # the mount points are made: nothing more can be written there
        try:
            _mount(None, path, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
        except OSError:
            report["problems"].append(f"could not make {path} read-only")
    report["isolation"] = ["read-only file system", "hidden: " + ", ".join([*hide, *mask]),
                           "only system folders and import paths visible", "no network", "own PID namespace",
                           "own IPC namespace"]
    return True


def _drop_privileges() -> None:
    """In the child (PID 1 of the new namespace): a fresh /proc, then an unprivileged user.

    A nested user namespace locks the mounts made above (they cannot be undone from inside)
    and the kernel runs there as an ordinary user without capabilities. Its files keep the
    grader's owner outside, so the interpreter and packages stay readable wherever they are
    installed (e.g. under /root), while the read-only mounts stop any write.
    """
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _unshare(CLONE_NEWUSER | CLONE_NEWNS)
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", "1000 0 1")
    _write("/proc/self/gid_map", "1000 0 1")
    os.setresgid(1000, 1000, 1000)
    os.setresuid(1000, 1000, 1000)
    _c().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


def _set_limits(memory_bytes: int, file_bytes: int) -> list[str]:
    """Limit the address space and the size of a written file (inherited by the kernel)."""
    done: list[str] = []
    if resource is None:
        return done
    for which, value, text in ((resource.RLIMIT_AS, memory_bytes, "memory"), (resource.RLIMIT_FSIZE, file_bytes,
                                                                               "file size")):
        if value > 0:
            soft, hard = resource.getrlimit(which)
            value = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(which, (value, value))
            done.append(f"{text} limit {value / 2**30:.3g} GiB" if text == "memory" else
                        f"{text} limit {value / 1e6:g} MB")
    return done


def _finish(fh: Any, report: dict[str, Any]) -> None:
    fh.write(json.dumps(report))
    fh.close()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="python -m course_grading._sandbox")
    parser.add_argument("--report", required=True)
    parser.add_argument("--cwd", required=True)
    parser.add_argument("--rw", action="append", default=[])
    parser.add_argument("--hide", action="append", default=[])
    parser.add_argument("--ro", action="append", default=[], help="folders to keep visible (read-only)")
    parser.add_argument("--mask", action="append", default=[],
                        help="folders covered even inside a --ro folder (the grading package: its import fails)")
    parser.add_argument("--memory-bytes", type=int, default=0, help="address space of the kernel (RLIMIT_AS)")
    parser.add_argument("--file-bytes", type=int, default=0, help="largest file the kernel may write (RLIMIT_FSIZE)")
    parser.add_argument("--off", action="store_true", help="no isolation (say so in the report)")
    parser.add_argument("--require", action="store_true", help="fail when isolation is unavailable")
    args = parser.parse_args(argv[:split])
    command = argv[split + 1:]
    # This launcher and the kernel end with the grader's worker, however it ends (killed too).
    if sys.platform.startswith("linux"):
        _c().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() == 1:  # the worker was gone before the line above
            return 73
    report: dict[str, Any] = {"isolation": [], "problems": []}
    report_file = open(args.report, "w", encoding="utf-8")  # opened now: invisible once isolated
    isolated = False
    if args.off:
        report["problems"].append("isolation turned off (--isolation off)")
    else:
        try:
            isolated = isolate([os.path.realpath(p) for p in args.rw], [os.path.realpath(p) for p in args.hide],
                               report, [os.path.realpath(p) for p in args.ro],
                               [os.path.realpath(p) for p in args.mask])
        except OSError as exc:
            report["problems"].append(f"isolation failed part-way ({exc}); the kernel was not started")
            _finish(report_file, report)
            return 70
    if not isolated and args.require:
        report["problems"].append("refused to run without isolation (--isolation required)")
        _finish(report_file, report)
        return 71
    limits = _set_limits(args.memory_bytes, args.file_bytes)
    if limits:
        report["isolation" if isolated else "limits"] = report.get("isolation" if isolated else "limits", []) + limits
    _finish(report_file, report)
    if not isolated:
        os.chdir(args.cwd)
        os.execvp(command[0], command)
    pid = os.fork()
    if pid == 0:
        try:
            _drop_privileges()
            _c().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # after the uid change, which clears it
            os.chdir(args.cwd)
            os.execvp(command[0], command)
        except BaseException as exc:  # noqa: BLE001 - the forked child must reach os._exit below
            print(f"sandbox: {exc}", file=sys.stderr)
        os._exit(72)
    # The launcher: the grader signals this process group (interrupts go to the kernel,
    # which handles them); it only waits and passes the kernel's exit status on.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGKILL))
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue
    return os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else 0


if __name__ == "__main__":
    sys.exit(main())
