"""Run a command under the system-call filter of systemd/soundmon.service, without systemd.

There is no running systemd here, so `SystemCallFilter=` cannot be tried by starting the unit.
This does what systemd does for it, with the same library (libseccomp, through ctypes): a
filter whose default action is the unit's `SystemCallErrorNumber=` (EPERM), allowing exactly
the unit's allow-list groups minus its `~` deny-list groups (expanded by `systemd-analyze
syscall-filter`, so the groups mean what this systemd means by them), with no_new_privs set,
then exec. Filters survive exec, so the command and all its threads run under it.

Usage: python -m tests.seccomp_exec UNIT_FILE -- COMMAND [ARGS...]
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

__all__ = ["allowed_syscalls", "available", "expand_group"]

_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_ACT_ERRNO = 0x00050000


def available() -> str | None:
    """Why the filter cannot be built here (None when it can)."""
    if shutil.which("systemd-analyze") is None:
        return "systemd-analyze is not installed (apt-get install systemd)"
    if ctypes.util.find_library("seccomp") is None:
        return "libseccomp is not installed (apt-get install libseccomp2)"
    return None


@cache
def expand_group(name: str) -> frozenset[str]:
    """System call names of a group such as @system-service, nested groups expanded."""
    out = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True,
                         check=True, timeout=30).stdout  # fmt: skip
    names: set[str] = set()
    for line in out.splitlines()[1:]:
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        names |= expand_group(item) if item.startswith("@") else {item}
    return frozenset(names)


def _expand(items: list[str]) -> set[str]:
    out: set[str] = set()
    for item in items:
        out |= expand_group(item) if item.startswith("@") else {item}
    return out


def allowed_syscalls(unit_text: str) -> set[str]:
    """The unit's SystemCallFilter= lines folded as systemd does: allow lists, minus `~` lines."""
    allow: set[str] = set()
    deny: set[str] = set()
    for line in unit_text.splitlines():
        key, _, value = line.strip().partition("=")
        if key != "SystemCallFilter" or not value:
            continue
        if value.startswith("~"):
            deny |= _expand(value[1:].split())
        else:
            allow |= _expand(value.split())
    return allow - deny


def _load_filter(allowed: set[str], error: int) -> None:
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp"), use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(_SCMP_ACT_ERRNO | error)
    if not ctx:
        raise OSError("seccomp_init failed")
    for name in sorted(allowed):
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:  # not a system call on this architecture (e.g. a 32-bit-only one)
            continue
        rc = lib.seccomp_rule_add(ctx, _SCMP_ACT_ALLOW, nr, 0)
        if rc < 0:
            raise OSError(-rc, f"seccomp_rule_add({name})")
    rc = lib.seccomp_load(ctx)  # sets no_new_privs first (libseccomp's default)
    if rc < 0:
        raise OSError(-rc, "seccomp_load")


def main(argv: list[str]) -> None:
    unit, sep, *command = argv
    if sep != "--" or not command:
        raise SystemExit(__doc__)
    text = Path(unit).read_text()
    number = next((line.split("=", 1)[1].strip() for line in text.splitlines()
                   if line.startswith("SystemCallErrorNumber=")), "EPERM")  # fmt: skip
    _load_filter(allowed_syscalls(text), getattr(errno, number))
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
