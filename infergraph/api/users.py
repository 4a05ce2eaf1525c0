"""Who may sign in: bcrypt password hashes from a users file or a Prefect Secret block.

The file is htpasswd-style (``name:$2b$12$…`` per line, ``#`` comments), so
``htpasswd -nbB name password`` output works too. A Secret block holds either the
same text or a JSON object ``{"name": "$2b$…"}``. No password or hash ever lives
in code. ``python -m infergraph.api.users add NAME --file users.htpasswd`` adds or replaces
a user (prompting for the password); see ``--help``.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bcrypt

from infergraph.cli_errors import UsageParser

logger = logging.getLogger(__name__)

DEFAULT_ROUNDS = 12
#: bcrypt only reads 72 bytes; bcrypt 5 refuses longer passwords instead of truncating.
MAX_PASSWORD_BYTES = 72
_HASH = re.compile(r"^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$")
_NAME = re.compile(r"^[^\s:]{1,128}$")


class UsersError(ValueError):
    """The users file or secret is malformed; the message names where."""


def hash_password(password: str, rounds: int = DEFAULT_ROUNDS) -> str:
    """A bcrypt hash of ``password`` (refusing what bcrypt would silently not check)."""
    raw = password.encode()
    if not raw:
        raise UsersError("the password is empty")
    if len(raw) > MAX_PASSWORD_BYTES:
        raise UsersError(f"the password is {len(raw)} bytes; bcrypt uses at most 72")
    return bcrypt.hashpw(raw, bcrypt.gensalt(rounds=rounds)).decode()


def hash_rounds(hashed: bytes) -> int:
    """The cost factor of a bcrypt hash."""
    return int(hashed[4:6])


def check_name(name: str, where: str) -> None:
    if not _NAME.match(name):
        raise UsersError(f"{where}: user name {name!r} is empty, too long or has ':' or spaces")


def check_entry(name: str, hashed: str, where: str) -> bytes:
    check_name(name, where)
    if not _HASH.match(hashed):
        raise UsersError(
            f"{where}: the hash for {name!r} is not a bcrypt hash ($2b$NN$ and 53 characters); "
            "create one with 'python -m infergraph.api.users hash'"
        )
    return hashed.encode()


def parse_users(text: str, source: str) -> dict[str, bytes]:
    """``name:hash`` lines → {name: hash}; errors name the source and line."""
    users: dict[str, bytes] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, hashed = line.partition(":")
        where = f"{source}:{number}"
        if not sep:
            raise UsersError(f"{where}: expected 'name:bcrypt-hash'")
        if name in users:
            raise UsersError(f"{where}: user {name!r} appears twice")
        users[name] = check_entry(name, hashed.strip(), where)
    return users


def parse_users_value(value: Any, source: str) -> dict[str, bytes]:
    """A Secret block's value: htpasswd text, or a JSON object of name → hash."""
    if isinstance(value, str):
        return parse_users(value, source)
    if isinstance(value, dict):
        return {str(k): check_entry(str(k), str(v), source) for k, v in value.items()}
    raise UsersError(f"{source}: expected htpasswd text or an object of name → bcrypt hash")


def format_users(users: dict[str, bytes]) -> str:
    header = "# infergraph API users: name:bcrypt-hash (python -m infergraph.api.users add NAME)\n"
    return header + "".join(f"{name}:{h.decode()}\n" for name, h in sorted(users.items()))


def read_users_file(path: Path) -> dict[str, bytes]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsersError(f"cannot read users file {path}: {exc.strerror or exc}") from exc
    return parse_users(text, str(path))


def write_users_file(path: Path, users: dict[str, bytes]) -> None:
    """Replace the file atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(format_users(users))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_users_secret(name: str) -> dict[str, bytes]:
    """Users from a Prefect Secret block (call from a thread, not the event loop)."""
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(name).get()
    except ValueError as exc:
        raise UsersError(f"cannot load Prefect Secret block {name!r}: {exc}") from exc
    return parse_users_value(value, f"Secret block {name!r}")


def write_users_secret(name: str, users: dict[str, bytes]) -> None:
    from prefect.blocks.system import Secret

    Secret(value={k: v.decode() for k, v in sorted(users.items())}).save(name, overwrite=True)


class UserStore:
    """The current users, re-read when the users file changes (so adding a user needs no restart).

    A Secret block is re-read when the service asks (every few seconds).
    """

    def __init__(self, load: Callable[[], dict[str, bytes]], path: Path | None = None) -> None:
        self._load = load
        self._path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._users: dict[str, bytes] = {}
        self._dummy: bytes = b""
        self._refresh(force=True)

    @classmethod
    def from_file(cls, path: Path) -> UserStore:
        return cls(lambda: read_users_file(path), path)

    @classmethod
    def from_secret(cls, name: str) -> UserStore:
        return cls(lambda: read_users_secret(name))

    def _file_stamp(self) -> tuple[int, int] | None:
        if self._path is None:
            return None
        try:
            st = self._path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def _refresh(self, force: bool = False) -> None:
        stamp = self._file_stamp()
        if not force and (self._path is None or stamp == self._stamp):
            return
        with self._lock:
            if not force and stamp == self._stamp:
                return
            users = self._load()
            rounds = max((hash_rounds(h) for h in users.values()), default=DEFAULT_ROUNDS)
            if not self._dummy or hash_rounds(self._dummy) != rounds:
                # Unknown names are checked against this, at the same cost as real hashes.
                self._dummy = bcrypt.hashpw(os.urandom(16), bcrypt.gensalt(rounds=rounds))
            self._users, self._stamp = users, stamp

    def refresh(self, reload: bool = False) -> None:
        """Re-read the file if it changed (any source if ``reload``); errors keep the old users."""
        try:
            self._refresh(force=reload)
        except UsersError as exc:
            logger.error("users not reloaded, keeping the previous users: %s", exc)

    def changed(self) -> bool:
        """Whether the users file differs from what was read (a stat, cheap enough per request)."""
        return self._path is not None and self._file_stamp() != self._stamp

    def credential(self, name: str) -> bytes | None:
        """The user's current password hash (tokens are bound to it), None if no such user."""
        return self._users.get(name)

    def __contains__(self, name: str) -> bool:
        return name in self._users

    def __len__(self) -> int:
        return len(self._users)

    def verify(self, name: str, password: str) -> bool:
        """Check a password in constant time whether or not the user exists (slow: bcrypt)."""
        return self.check(name, password) is not None

    def check(self, name: str, password: str) -> bytes | None:
        """The password hash the password matched (tokens are bound to it), else None."""
        stored = self._users.get(name)
        raw = password.encode()
        if len(raw) > MAX_PASSWORD_BYTES:
            raw = raw[:MAX_PASSWORD_BYTES]
            stored = None  # never accepted, but costs the same as a real check
        ok = bcrypt.checkpw(raw, stored or self._dummy)
        return stored if ok and stored is not None else None


def main(argv: list[str] | None = None) -> int:
    parser = UsageParser(
        prog="python -m infergraph.api.users", description="Manage the prediction API's users."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command, help_text in (
        ("add", "add a user, or replace their password"),
        ("remove", "remove a user"),
    ):
        p = sub.add_parser(command, help=help_text)
        p.add_argument("name")
        where = p.add_mutually_exclusive_group(required=True)
        where.add_argument("--file", type=Path, help="users file (created if missing)")
        where.add_argument("--secret", help="Prefect Secret block name (created if missing)")
        if command == "add":
            _password_args(p)
    _password_args(sub.add_parser("hash", help="print a bcrypt hash of a password"))
    args = parser.parse_args(argv)
    try:
        if args.command == "hash":
            print(hash_password(_read_password(args), args.rounds))
            return 0
        users = _load_for_edit(args)
        if args.command == "add":
            check_name(args.name, "user name")
            users[args.name] = hash_password(_read_password(args), args.rounds).encode()
        elif users.pop(args.name, None) is None:
            raise UsersError(f"no user {args.name!r}")
        if args.file:
            write_users_file(args.file, users)
        else:
            write_users_secret(args.secret, users)
    except UsersError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.command}: {args.name} ({len(users)} users in {args.file or args.secret})")
    return 0


def _password_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="bcrypt cost (4-31)")


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise UsersError("the passwords differ")
    return first


def _load_for_edit(args: argparse.Namespace) -> dict[str, bytes]:
    if args.file:
        return read_users_file(args.file) if args.file.exists() else {}
    try:
        return read_users_secret(args.secret)
    except UsersError:
        from prefect.blocks.system import Secret

        try:
            Secret.load(args.secret)
        except ValueError:
            return {}  # no such block yet: create it
        raise


if __name__ == "__main__":
    sys.exit(main())
