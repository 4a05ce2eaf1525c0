"""Scenario stores: an S3 bucket (through an AwsCredentials block) or a local folder.

Both hold the same layout, ``<scenario>/inputs/…``, outputs beside them,
``<scenario>/logs/<step>.txt`` and ``<scenario>/status.json``, and offer the same few
operations, so a model runs identically with no AWS at all.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from botocore.exceptions import ClientError
from prefect_aws import AwsCredentials

from infergraph.aws.clients import aws_client


class StoreError(RuntimeError):
    """A store that cannot be reached or a key that is not there, named."""


class ScenarioStore(Protocol):
    uri: str

    def keys(self, prefix: str) -> list[str]: ...
    def get(self, key: str) -> bytes: ...
    def put(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> None: ...
    def put_new(self, key: str, data: bytes) -> bool: ...
    def delete(self, keys: list[str]) -> None: ...
    def metadata(self, key: str) -> dict[str, str]: ...
    def location(self, key: str) -> str: ...


def check_key(key: str) -> str:
    """A relative, normalised key: refuses absolute keys and ``..`` (they would escape)."""
    path = PurePosixPath(key)
    if path.is_absolute() or ".." in path.parts or not key or key.endswith("/"):
        raise StoreError(f"invalid key {key!r}: keys are relative paths without '..'")
    return str(path)


class LocalStore:
    """A folder that mirrors the bucket layout; metadata kept beside each file."""

    META = ".meta"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _meta_path(self, key: str) -> Path:
        return self.root / self.META / (check_key(key) + ".json")

    def keys(self, prefix: str) -> list[str]:
        base = self.root / prefix if prefix else self.root
        if not base.exists():
            return []
        out = []
        for path in base.rglob("*") if base.is_dir() else [base]:
            rel = path.relative_to(self.root).as_posix()
            if path.is_file() and not rel.startswith(self.META + "/") and rel.startswith(prefix):
                out.append(rel)
        return sorted(out)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"{self.location(key)} does not exist") from None

    def put(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a reader polling status.json never sees half a file.
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, prefix=".tmp-") as tmp:
            tmp.write(data)
        os.replace(tmp.name, path)
        meta = self._meta_path(key)
        if metadata:
            meta.parent.mkdir(parents=True, exist_ok=True)
            meta.write_text(json.dumps(metadata))
        else:
            meta.unlink(missing_ok=True)

    def put_new(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return True

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            self._path(key).unlink(missing_ok=True)
            self._meta_path(key).unlink(missing_ok=True)

    def metadata(self, key: str) -> dict[str, str]:
        try:
            return json.loads(self._meta_path(key).read_text())
        except FileNotFoundError:
            return {}

    def location(self, key: str) -> str:
        return str(self.root / key)


class S3Store:
    """``s3://bucket[/prefix]`` through boto3; credentials from an AwsCredentials block."""

    def __init__(self, uri: str, credentials: AwsCredentials | None = None) -> None:
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.uri = uri.rstrip("/")
        self.client = aws_client("s3", credentials)

    def _key(self, key: str) -> str:
        key = check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in {"NoSuchKey", "404"}:
                raise StoreError(f"{self.location(kwargs.get('Key', ''))} does not exist") from None
            if code == "NoSuchBucket":
                raise StoreError(f"bucket {self.bucket!r} does not exist") from None
            raise StoreError(f"{what} s3://{self.bucket}: {code or exc}") from exc

    def keys(self, prefix: str) -> list[str]:
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        out: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                out.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            raise StoreError(f"listing s3://{self.bucket}/{full}: {code or exc}") from None
        return sorted(out)

    def get(self, key: str) -> bytes:
        return self._call("reading", self.client.get_object, Key=self._key(key))["Body"].read()

    def put(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        self._call(
            "writing",
            self.client.put_object,
            Key=self._key(key),
            Body=data,
            Metadata=metadata or {},
        )

    def put_new(self, key: str, data: bytes) -> bool:
        """S3 conditional write (If-None-Match: *): exactly one concurrent writer wins."""
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*"
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"PreconditionFailed", "412"}:
                return False
            raise StoreError(f"writing {self.location(key)}: {exc}") from None
        return True

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            chunk = [{"Key": self._key(k)} for k in keys[start : start + 1000]]
            self._call("deleting from", self.client.delete_objects, Delete={"Objects": chunk})

    def metadata(self, key: str) -> dict[str, str]:
        return self._call("reading", self.client.head_object, Key=self._key(key))["Metadata"]

    def location(self, key: str) -> str:
        return f"{self.uri}/{key}"


def open_store(uri: str, credentials: AwsCredentials | str | None = None) -> ScenarioStore:
    """``s3://bucket[/prefix]`` or a local folder path (``file://`` accepted)."""
    if uri.startswith("s3://"):
        if isinstance(credentials, str):
            credentials = AwsCredentials.load(credentials)
        if not uri.removeprefix("s3://").strip("/"):
            raise StoreError(f"store {uri!r} names no bucket: use s3://<bucket>[/prefix]")
        return S3Store(uri, credentials)
    if "://" in uri and not uri.startswith("file://"):
        raise StoreError(f"store {uri!r}: use s3://<bucket>[/prefix] or a local folder path")
    return LocalStore(uri.removeprefix("file://"))


def download(store: ScenarioStore, prefix: str, dest: Path) -> list[str]:
    """Copy every object under ``prefix`` into ``dest`` (keys relative to the prefix)."""
    written = []
    for key in store.keys(prefix):
        rel = key[len(prefix) :]
        target = dest / check_key(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(store.get(key))
        written.append(rel)
    return written


def replace_prefix(store: ScenarioStore, prefix: str, folder: Path) -> int:
    """Make ``prefix`` hold exactly ``folder``'s files: upload them, delete the rest."""
    uploaded = set()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            key = prefix + path.relative_to(folder).as_posix()
            store.put(key, path.read_bytes())
            uploaded.add(key)
    stale = [k for k in store.keys(prefix) if k not in uploaded]
    if stale:
        store.delete(stale)
    return len(uploaded)


def copy_tree(src: Path, dest: Path, ignore: tuple[str, ...] = ()) -> None:
    with contextlib.suppress(FileExistsError):
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns(*ignore), dirs_exist_ok=True)
