"""Host key verification for the SSH collector: the known_hosts files a server's key is checked
against, trust on first use (recorded in dutyd's own known_hosts file), and the error that tells
an unknown key from a changed one."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import asyncssh

from dutyd.core.errors import BadCredentials


class HostKeyCheck:
    """Holds the known_hosts entries for one connection attempt and remembers why a key was
    refused, so the error can tell 'unknown' from 'changed'."""

    def __init__(self, files: Sequence[Path], trust_on_first_use: bool) -> None:
        self.files = list(files)
        self.tofu = trust_on_first_use
        self.known = asyncssh.SSHKnownHosts()
        self.outcome: Literal["unknown", "changed", "tofu"] | None = None
        self.presented: asyncssh.SSHKey | None = None
        for path in self.files:
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise BadCredentials(
                    f"cannot read known_hosts file {path}: {exc.strerror}"
                ) from exc
            try:
                self.known.load(text)
            except (ValueError, asyncssh.KeyImportError) as exc:
                raise BadCredentials(f"known_hosts file {path} is not valid: {exc}") from exc

    def validate(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        """Called by asyncssh only for a key that matches no known_hosts entry."""
        self.presented = key
        matched = self.known.match(host, addr, port if port != 22 else None)
        if matched[0] or matched[1]:
            self.outcome = "changed"
            return False
        self.outcome = "tofu" if self.tofu else "unknown"
        return self.tofu

    def error(
        self, exc: asyncssh.Error, *, address: str, port: int, known_hosts: str
    ) -> BadCredentials:
        """Why the server's key was refused, and how to fix it."""
        where = f"{address}:{port}"
        files = " and ".join(str(f) for f in self.files)
        key = self.presented
        shown = f"{key.get_algorithm()} {key.get_fingerprint()}" if key is not None else "?"
        if self.outcome == "changed":
            return BadCredentials(
                f"host key for {where} does not match known_hosts -- possible "
                f"man-in-the-middle; the server now presents {shown}. If the key was changed "
                f"on purpose, replace its line in {files}"
            )
        if self.outcome == "unknown":
            keyscan = f"ssh-keyscan -p {port} {address}"
            return BadCredentials(
                f"host key for {where} is not in known_hosts ({files}); the server presents "
                f"{shown}. Check that fingerprint, then add it ({keyscan} >> "
                f"{known_hosts}) or set trust_on_first_use: true"
            )
        return BadCredentials(f"host key for {where} refused: {exc.reason}")


class HostKeyClient(asyncssh.SSHClient):
    """The asyncssh client object: hands host key decisions to a `HostKeyCheck`."""

    def __init__(self, check: HostKeyCheck) -> None:
        self._check = check

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        return self._check.validate(host, addr, port, key)


def known_hosts_line(address: str, port: int, key: asyncssh.SSHKey) -> str:
    """The known_hosts line OpenSSH would write for this server and key."""
    pattern = address if port == 22 else f"[{address}]:{port}"
    return f"{pattern} {key.export_public_key().decode().strip()}"


def append_known_host(path: Path, line: str) -> None:
    """Add `line` to a known_hosts file (created 0600 in a 0700 directory) unless present.
    Blocking: run it in the thread pool."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileNotFoundError):
        if line in path.read_text(encoding="utf-8").splitlines():
            return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(line + "\n")
