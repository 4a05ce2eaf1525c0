"""Create or update Prefect blocks from a TOML or YAML file, with environment overrides.

One file describes every block a deployment needs; pointing the same flows at
an emulator or at real AWS is a matter of which file (or which environment
variables) you apply, never of code::

    # blocks.toml: one table per block, [<block type slug>.<block name>]
    [aws-credentials.local-aws]
    region_name = "us-east-1"
    aws_access_key_id = "testing"
    aws_secret_access_key = "${AWS_SECRET_ACCESS_KEY:-testing}"
    aws_client_parameters = { endpoint_url = "http://127.0.0.1:5055" }

    [sqs-queue.inference-requests]
    queue_url = "http://127.0.0.1:5055/123456789012/inference-requests"
    credentials = "local-aws"    # a name: the aws-credentials block above (or a saved one)

Values may use ``${VAR}`` or ``${VAR:-default}``, so secrets stay in the
environment rather than in the file. After interpolation, environment
variables override single fields:

- ``INFERGRAPH_AWS_ENDPOINT_URL`` sets ``aws_client_parameters.endpoint_url`` of
  every ``aws-credentials`` block and moves queue URLs with it; set it empty to
  talk to real AWS (with ``AWS_ACCOUNT_ID`` for queue URLs and ARNs, see
  :func:`switch_endpoint`), and ``INFERGRAPH_AWS_REGION`` sets their ``region_name``;
- ``INFERGRAPH_BLOCK__<TYPE>__<NAME>__<FIELD>[__<SUBFIELD>]`` sets one field, e.g.
  ``INFERGRAPH_BLOCK__SQS_QUEUE__INFERENCE_REQUESTS__VISIBILITY_TIMEOUT=600``
  (``-`` and ``_`` are interchangeable; the value is read as JSON when it can be).

``python -m infergraph.blockconfig apply blocks.toml`` saves the blocks (``--dry-run``
only validates and prints them, secrets masked).
"""

from __future__ import annotations

import json
import os
import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.blocks.core import Block

from infergraph.cli_errors import UsageParser, command

ENV_PREFIX = "INFERGRAPH_BLOCK__"
ENDPOINT_ENV = "INFERGRAPH_AWS_ENDPOINT_URL"
REGION_ENV = "INFERGRAPH_AWS_REGION"
ACCOUNT_ENV = "AWS_ACCOUNT_ID"
#: The shipped config for real AWS (every block prefect.yaml names), in the blocks package.
EXAMPLE_NAME = "aws.example.yaml"
#: The placeholder keys the emulator accepts (``devstack up`` writes them); never real ones.
EMULATOR_KEYS = frozenset({"testing"})
_ARN = re.compile(r"^arn:aws:(?P<service>[a-z0-9-]+):[a-z0-9-]*:\d{12}:(?P<rest>.+)$")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class BlockConfigError(ValueError):
    """The configuration cannot produce the blocks it describes; the message says where."""


@dataclass
class SavedBlock:
    """A block that was (or, in a dry run, would be) saved."""

    slug: str
    name: str
    block: Block

    def describe(self) -> str:
        data = self.block.model_dump(mode="json", exclude_none=True)
        shown = {k: v for k, v in data.items() if not isinstance(v, dict) or k != "credentials"}
        return f"{self.slug}/{self.name}: {json.dumps(shown, default=str)}"


def load_file(path: str | Path) -> dict[str, Any]:
    """The raw configuration of a ``.toml``, ``.yaml`` or ``.yml`` file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BlockConfigError(f"{path}: {exc.strerror}") from exc
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise BlockConfigError(f"{path}: expected a .toml, .yaml or .yml file")
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        if isinstance(exc, BlockConfigError):
            raise
        raise BlockConfigError(f"{path}: {exc}") from exc
    except Exception as exc:  # yaml's errors carry their own line and column
        raise BlockConfigError(f"{path}: {exc}") from exc
    if not isinstance(data, dict):
        raise BlockConfigError(f"{path}: the top level must be a table of block types")
    return data


def resolve(config: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> dict:
    """The configuration after ``${VAR}`` interpolation and environment overrides."""
    environ = os.environ if environ is None else environ
    resolved: dict[str, dict[str, dict[str, Any]]] = {}
    for slug, blocks in config.items():
        if not isinstance(blocks, dict):
            raise BlockConfigError(f"[{slug}]: expected a table of blocks by name")
        resolved[slug] = {}
        for name, fields in blocks.items():
            if not isinstance(fields, dict):
                raise BlockConfigError(f"[{slug}.{name}]: expected a table of fields")
            resolved[slug][name] = _interpolate(fields, f"{slug}.{name}", environ)
    _apply_overrides(resolved, environ)
    return resolved


def build(config: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> list[SavedBlock]:
    """Validate every block of the configuration, without saving anything.

    A string in a field that holds a block (``credentials = "local-aws"``) names
    a block of this configuration, or else one already saved.
    """
    resolved = resolve(config, environ)
    built: dict[tuple[str, str], SavedBlock] = {}
    order: list[SavedBlock] = []

    def reference(targets: list[type[Block]], value: str, where: str, trail: tuple) -> Block:
        """The block a name refers to: one of this file (any fitting type), else a saved one."""
        for target in targets:
            ref_slug = target.get_block_type_slug()
            if value in resolved.get(ref_slug, {}):
                return make(ref_slug, value, trail).block
        for target in targets:
            try:
                return target.load(value)
            except ValueError:
                continue
        slugs = " or ".join(t.get_block_type_slug() for t in targets)
        raise BlockConfigError(f"{where} = {value!r}: no {slugs} block of that name here or saved")

    def make(slug: str, name: str, trail: tuple[str, ...]) -> SavedBlock:
        if (slug, name) in built:
            return built[(slug, name)]
        if f"{slug}.{name}" in trail:
            raise BlockConfigError(f"[{slug}.{name}]: circular reference via {' → '.join(trail)}")
        cls = block_class(slug)
        fields = dict(resolved[slug][name])
        for field, info in cls.model_fields.items():
            targets = _block_types(info.annotation)
            value = fields.get(field)
            if targets and isinstance(value, str):
                where = f"[{slug}.{name}] {field}"
                fields[field] = reference(targets, value, where, (*trail, f"{slug}.{name}"))
        try:
            block = cls(**fields)
        except Exception as exc:
            raise BlockConfigError(f"[{slug}.{name}]: {_validation_text(exc)}") from None
        entry = SavedBlock(slug, name, block)
        built[(slug, name)] = entry
        order.append(entry)
        return entry

    for slug, blocks in resolved.items():
        for name in blocks:
            make(slug, name, ())
    return order


def apply(
    config: Mapping[str, Any] | str | Path,
    environ: Mapping[str, str] | None = None,
    dry_run: bool = False,
) -> list[SavedBlock]:
    """Create or update every block of a configuration (a mapping or a file path).

    Blocks are saved in dependency order, so a referenced block is saved first and
    the referring block stores a reference to it (updating the credentials block
    later updates every block that uses it).
    """
    data = load_file(config) if isinstance(config, str | Path) else config
    entries = build(data, environ)
    if not dry_run:
        for entry in entries:
            entry.block.save(entry.name, overwrite=True)
    return entries


def block_class(slug: str) -> type[Block]:
    """The block class registered under a type slug (``sqs-queue``, ``aws-credentials``)."""
    import prefect_aws  # noqa: F401  (registers aws-credentials, s3-bucket)
    from prefect.blocks.core import UnknownBlockType

    import blocks  # noqa: F401  (registers infergraph's block types)

    try:
        return Block.get_block_class_from_key(slug)
    except (KeyError, UnknownBlockType):
        raise BlockConfigError(f"[{slug}]: unknown block type slug") from None


def _block_types(annotation: Any) -> list[type[Block]]:
    """The block classes a field accepts (several for a union such as S3Bucket's)."""
    candidates = [annotation, *getattr(annotation, "__args__", ())]
    return [c for c in candidates if isinstance(c, type) and issubclass(c, Block)]


def _interpolate(value: Any, where: str, environ: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, f"{where}.{k}", environ) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, where, environ) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise BlockConfigError(f"{where}: environment variable {name} is not set")

    return _VAR.sub(substitute, value)


def _apply_overrides(config: dict[str, dict[str, dict[str, Any]]], environ: Mapping[str, str]):
    if ENDPOINT_ENV in environ:
        switch_endpoint(config, environ[ENDPOINT_ENV], environ)
    for fields in config.get("aws-credentials", {}).values():
        if environ.get(REGION_ENV):
            fields["region_name"] = environ[REGION_ENV]
    for variable, raw in environ.items():
        if not variable.startswith(ENV_PREFIX):
            continue
        parts = variable[len(ENV_PREFIX) :].split("__")
        if len(parts) < 3:
            raise BlockConfigError(f"{variable}: expected {ENV_PREFIX}<TYPE>__<NAME>__<FIELD>")
        slug = _match(config, parts[0], variable)
        name = _match(config[slug], parts[1], variable)
        target = config[slug][name]
        path = [p.lower() for p in parts[2:]]
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = _parse_value(raw)


def switch_endpoint(
    config: dict[str, dict[str, dict[str, Any]]], endpoint: str, environ: Mapping[str, str]
) -> None:
    """Point every AWS block at ``endpoint`` ("" = real AWS), leaving nothing of the old one.

    Besides each credentials block's ``endpoint_url``, the emulator shows in queue
    URLs (``http://127.0.0.1:5055/<account>/<name>``), in ARNs (its account) and in
    the emulator's placeholder keys; for real AWS those become
    ``https://sqs.<region>.amazonaws.com/<AWS_ACCOUNT_ID>/<name>``, ARNs in
    ``AWS_ACCOUNT_ID`` and ``INFERGRAPH_AWS_REGION`` (or the file's region), and no
    keys at all (boto3's default chain: role, profile or environment).
    """
    credentials = config.get("aws-credentials", {})
    old = {
        str((f.get("aws_client_parameters") or {}).get("endpoint_url") or "").rstrip("/")
        for f in credentials.values()
    } - {""}
    for fields in credentials.values():
        params = dict(fields.get("aws_client_parameters") or {})
        params["endpoint_url"] = endpoint or None
        fields["aws_client_parameters"] = params
        if not endpoint:
            for key in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token"):
                if fields.get(key) in EMULATOR_KEYS:
                    del fields[key]
    if not old:
        return
    region = environ.get(REGION_ENV) or next(
        (f["region_name"] for f in credentials.values() if f.get("region_name")), "us-east-1"
    )
    account = environ.get(ACCOUNT_ENV, "")

    def rewrite(value: Any, where: str) -> Any:
        if isinstance(value, dict):
            return {k: rewrite(v, f"{where}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [rewrite(v, where) for v in value]
        if not isinstance(value, str):
            return value
        base = next((o for o in old if value.startswith(o + "/")), None)
        if base is not None:
            if endpoint:
                return endpoint.rstrip("/") + value[len(base) :]
            name = value.rstrip("/").rsplit("/", 1)[-1]
            return f"https://sqs.{region}.amazonaws.com/{need_account(where)}/{name}"
        arn = _ARN.match(value)
        if arn and not endpoint:
            return f"arn:aws:{arn['service']}:{region}:{need_account(where)}:{arn['rest']}"
        return value

    def need_account(where: str) -> str:
        if not account:
            raise BlockConfigError(
                f"{where}: set {ACCOUNT_ENV}=<your AWS account id> to move queue URLs and "
                "ARNs from the emulator to real AWS"
            )
        return account

    for slug, blocks in config.items():
        for name, fields in blocks.items():
            blocks[name] = rewrite(fields, f"{slug}.{name}")


def _match(options: Mapping[str, Any], token: str, variable: str) -> str:
    wanted = token.lower().replace("-", "_")
    for key in options:
        if key.lower().replace("-", "_") == wanted:
            return key
    raise BlockConfigError(f"{variable}: no {token!r} in the configuration")


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _validation_text(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors(include_input=False)
        )
    return str(exc)


def config_path(path: Path) -> Path:
    """``path``, or the shipped example it names; a missing file says which to copy."""
    import blocks
    from infergraph.aws.local import LOCAL_HOME
    from infergraph.cli_errors import UsageError

    example = Path(blocks.__file__).resolve().parent / EXAMPLE_NAME
    if path.is_file():
        return path
    if path.name == EXAMPLE_NAME:
        return example
    raise UsageError(
        f"{path}: no such file",
        f"copy {LOCAL_HOME / 'blocks.yaml'} (written by python -m infergraph.devstack up) "
        f"or the real-AWS example {example}, edit it, and apply the copy",
    )


@command()
def main(argv: list[str] | None = None) -> int:
    parser = UsageParser(description="Create or update Prefect blocks from a file.")
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("apply", help="save every block of a TOML/YAML file")
    cmd.add_argument("file", type=Path)
    cmd.add_argument("--dry-run", action="store_true", help="validate and print, save nothing")
    args = parser.parse_args(argv)
    entries = apply(config_path(args.file), dry_run=args.dry_run)
    verb = "would save" if args.dry_run else "saved"
    for entry in entries:
        print(f"{verb} {entry.describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
