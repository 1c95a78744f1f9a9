"""Project files: ``ratatouille.yaml`` and ``workspace.yaml`` as frozen pydantic models.

Loading reports every problem at once, each with file, key and line. Strings may hold
``${env:NAME}`` (or ``${env:NAME:-default}``); ``RAT_<SECTION>__<KEY>`` environment variables
override any key (``RAT_STORAGE__S3__ENDPOINT=http://...``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from ratatouille.errors import ConfigError, Problem

PROJECT_FILE = "ratatouille.yaml"
WORKSPACE_FILE = "workspace.yaml"
ENV_PREFIX = "RAT_"
LAYERS = ("bronze", "silver", "gold")
_NAME = r"^[a-z_][a-z0-9_]*$"


class Frozen(BaseModel):
    """Base of every config model: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class S3Config(Frozen):
    """Credentials and endpoint of an S3-compatible object store."""

    endpoint: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    path_style: bool = True


class StorageConfig(Frozen):
    """Where tables and landing files live: a local directory or ``s3://bucket/prefix``."""

    warehouse: str = ".rat/warehouse"
    landing: str = "data/landing"
    s3: S3Config = S3Config()


class CatalogConfig(Frozen):
    """The Iceberg catalog: SQL (SQLite or PostgreSQL) or an Iceberg REST catalog."""

    type: Literal["sql", "rest"] = "sql"
    uri: str = "sqlite:///.rat/catalog.db"
    name: str = "ratatouille"
    properties: dict[str, str] = Field(default_factory=dict)


class StateConfig(Frozen):
    """The state store: runs, file registry, watermarks, users."""

    uri: str = "sqlite:///.rat/state.db"


MAX_PREVIEW_ROWS = 10_000


class ServerConfig(Frozen):
    """Where ``rat serve`` listens, and the limits of its REST API."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    query_row_limit: int = Field(
        default=100_000,
        ge=1,
        description=(
            "Most rows one `POST /api/v1/query` answers with; a request's own `limit` can only lower it. "
            'A longer result is cut: JSON says `"truncated": true`, and every format carries the limit in '
            "the `X-Rat-Row-Limit` header."
        ),
    )
    statement_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description=(
            "Seconds a query of the API (`/api/v1/query`, table previews) may run, streaming its result "
            "included. A longer one is stopped: a `QueryTimeoutError` (HTTP 400), or a response cut short "
            "when rows were already sent."
        ),
    )
    query_batch_rows: int = Field(
        default=65_536,
        ge=1,
        le=1_048_576,
        description="Rows per batch when the API streams a query result; larger batches use more memory per query.",
    )
    preview_rows: int = Field(
        default=100,
        ge=1,
        le=MAX_PREVIEW_ROWS,
        description=(
            f"Rows in a table's preview (`GET /api/v1/tables/...`) when the request gives no `limit`; "
            f"a request may ask for up to {MAX_PREVIEW_ROWS:,}."
        ),
    )
    run_start_timeout_seconds: float = Field(
        default=120.0,
        gt=0,
        description=(
            "Seconds `POST /api/v1/pipelines/.../runs` waits for the run to get its id (it answers HTTP 503 "
            "past that; the run may still start)."
        ),
    )
    shutdown_grace_seconds: float = Field(
        default=10.0,
        ge=0,
        description=(
            "On Ctrl-C or SIGTERM, seconds `rat serve` waits for requests and runs it started to finish "
            "before it stops; a run cut short is recorded as failed."
        ),
    )


class EngineConfig(Frozen):
    """Overrides of the profile's DuckDB settings; ``None`` keeps the profile's value."""

    memory_limit: str | None = None
    threads: int | None = Field(default=None, ge=1)
    temp_directory: str = ".rat/tmp"
    max_parallel_pipelines: int | None = Field(default=None, ge=1)


Event = Literal["run_failed", "test_failed", "test_warned", "freshness"]
EVENTS: tuple[Event, ...] = ("run_failed", "test_failed", "test_warned", "freshness")
DEFAULT_EVENTS: tuple[Event, ...] = ("run_failed", "test_failed", "freshness")  # warnings are opt-in


class WebhookConfig(Frozen):
    """One webhook: where to post, in which body shape, for which events."""

    url: str
    kind: Literal["slack", "json"] = "json"
    events: list[Event] = Field(default_factory=lambda: list(DEFAULT_EVENTS))
    headers: dict[str, str] = Field(default_factory=dict)
    name: str | None = None

    @property
    def label(self) -> str:
        """How the webhook is shown: its name, else its URL without path or query (they hold secrets)."""
        if self.name:
            return self.name
        from urllib.parse import urlsplit

        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}/..." if parts.netloc else "(invalid url)"


class AlertsConfig(Frozen):
    """``alerts:`` of ``ratatouille.yaml``."""

    webhooks: list[WebhookConfig] = Field(
        default_factory=list, description="Where to POST alerts: `{url, kind: slack|json, events, headers, name}` each."
    )
    retries: int = Field(default=3, ge=0, le=10, description="Attempts after the first, on timeouts, 429 and 5xx.")
    timeout_s: float = Field(default=10.0, gt=0, le=120, description="Seconds to wait for a webhook to answer.")
    backoff_s: float = Field(default=1.0, ge=0, le=60, description="First wait between attempts; it doubles each time.")


ProfileName = Literal["tiny", "small", "medium", "large", "auto"]


class ProjectConfig(Frozen):
    """``ratatouille.yaml``: every key has a default."""

    name: str = "ratatouille"
    profile: ProfileName = "auto"
    default_workspace: str = "default"
    storage: StorageConfig = StorageConfig()
    catalog: CatalogConfig = CatalogConfig()
    state: StateConfig = StateConfig()
    server: ServerConfig = ServerConfig()
    engine: EngineConfig = EngineConfig()
    alerts: AlertsConfig = Field(
        default_factory=AlertsConfig, description="Webhook alerts on failed runs, failed tests and freshness breaches."
    )
    vars: dict[str, Any] = Field(default_factory=dict)


class WorkspaceResources(Frozen):
    """Per-workspace limits."""

    max_parallel_pipelines: int | None = Field(default=None, ge=1)


class WorkspaceConfig(Frozen):
    """``workspaces/<name>/workspace.yaml``."""

    name: str
    description: str = ""
    resources: WorkspaceResources = WorkspaceResources()
    layers: tuple[str, ...] = LAYERS
    vars: dict[str, Any] = Field(default_factory=dict)
    products: list[dict[str, Any]] = Field(default_factory=list)
    subscriptions: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not re.match(_NAME, value):
            raise ValueError("must be lower-case letters, digits and underscores, starting with a letter")
        return value


# --- loading ---------------------------------------------------------------------------

Path_ = tuple[str | int, ...]


def read_yaml(path: Path) -> tuple[Any, dict[Path_, int]]:
    """Parse a YAML file and remember the line of every key.

    Returns:
        The data, and a map from key path (``("storage", "s3", "endpoint")``) to 1-based line.

    Raises:
        ConfigError: the file cannot be read or is not valid YAML.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(str(path), None, "", f"cannot read the file: {exc.strerror}")]) from exc
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster than pure Python
    try:
        node = yaml.compose(text, Loader=loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([Problem(str(path), line, "", f"invalid YAML: {reason}")]) from exc
    lines: dict[Path_, int] = {}
    if node is None:
        return {}, lines
    _record_lines(node, (), lines)
    return yaml.load(text, Loader=loader), lines  # noqa: S506 - a safe loader


def _record_lines(node: yaml.Node, prefix: Path_, lines: dict[Path_, int]) -> None:
    lines.setdefault(prefix, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = prefix + (str(key_node.value),)
            lines[key] = key_node.start_mark.line + 1
            _record_lines(value_node, key, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_lines(item, prefix + (index,), lines)


_ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate_env(
    data: Any, file: str, lines: Mapping[Path_, int], problems: list[Problem], env: Mapping[str, str], at: Path_ = ()
) -> Any:
    """Replace ``${env:NAME}`` in every string; a missing variable is a problem, not a crash."""
    if isinstance(data, dict):
        return {k: interpolate_env(v, file, lines, problems, env, at + (str(k),)) for k, v in data.items()}
    if isinstance(data, list):
        return [interpolate_env(v, file, lines, problems, env, at + (i,)) for i, v in enumerate(data)]
    if not isinstance(data, str):
        return data

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        problems.append(
            Problem(file, _line(lines, at), _dotted(at), f"environment variable {name} is not set; export it")
        )
        return ""

    return _ENV_REF.sub(replace, data)


def apply_env_overrides(
    data: dict[str, Any], env: Mapping[str, str], sections: Iterable[str] | None = None
) -> dict[str, Any]:
    """Apply ``RAT_<SECTION>__<KEY>=value`` overrides; values are parsed as YAML scalars.

    Only variables whose first part names a top-level key (``sections``) count, so an unrelated
    ``RAT_SOMETHING`` in the environment is ignored.
    """
    result = _deep_copy(data)
    known = set(sections) if sections is not None else set(ProjectConfig.model_fields)
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or name in ("RAT_PROJECT", "RAT_WORKSPACE"):
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__") if part]
        if not path or path[0] not in known:
            continue
        try:
            value = yaml.safe_load(raw) if raw else raw
        except yaml.YAMLError:
            value = raw
        if isinstance(value, dict | list):
            value = raw
        target = result
        for part in path[:-1]:
            child = target.get(part)
            if not isinstance(child, dict):
                child = {}
                target[part] = child
            target = child
        target[path[-1]] = value
    return result


def _deep_copy(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in data.items()}


def _line(lines: Mapping[Path_, int], at: Path_) -> int | None:
    for end in range(len(at), -1, -1):
        if at[:end] in lines:
            return lines[at[:end]]
    return None


def _dotted(at: Path_) -> str:
    return ".".join(str(p) for p in at)


def validate(
    model: type[BaseModel],
    data: Any,
    file: str,
    lines: Mapping[Path_, int],
    problems: list[Problem],
) -> Any:
    """Validate ``data`` against ``model``, turning every pydantic error into a located problem.

    Returns:
        The model instance, or ``None`` when there were problems (they are appended to ``problems``).
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.append(Problem(file, 1, "", "must be a mapping of keys to values"))
        return None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc: Path_ = tuple(err["loc"])
            message = err["msg"]
            if err["type"] == "extra_forbidden":
                allowed = _allowed_keys(model, loc[:-1])
                message = f"unknown key; allowed keys: {', '.join(allowed)}" if allowed else "unknown key"
            elif err["type"] == "missing":
                message = "is required"
            problems.append(Problem(file, _line(lines, loc), _dotted(loc), message))
        return None


def _allowed_keys(model: type[BaseModel], at: Path_) -> list[str]:
    current: type[BaseModel] = model
    for part in at:
        field = current.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        current = annotation
    return sorted(current.model_fields)


def load_project_config(root: Path, env: Mapping[str, str] | None = None) -> ProjectConfig:
    """Load ``<root>/ratatouille.yaml`` with env interpolation and overrides.

    Raises:
        ConfigError: listing every problem found, each with file:line.
    """
    env = os.environ if env is None else env
    path = root / PROJECT_FILE
    data, lines = read_yaml(path)
    problems: list[Problem] = []
    if data is not None and not isinstance(data, dict):
        raise ConfigError([Problem(str(path), 1, "", "must be a mapping of keys to values")])
    data = interpolate_env(data or {}, str(path), lines, problems, env)
    data = apply_env_overrides(data, env)
    found: list[Problem] = []
    config = validate(ProjectConfig, data, str(path), lines, found)
    for problem in found:
        variable = ENV_PREFIX + "__".join(problem.key.split(".")).upper()
        if variable in env:  # the bad value came from the environment, not the file
            problem = Problem(f"environment variable {variable}", None, problem.key, problem.message)
        problems.append(problem)
    if problems:
        raise ConfigError(problems)
    assert isinstance(config, ProjectConfig)
    return config


def load_workspace_config(directory: Path, env: Mapping[str, str] | None = None) -> WorkspaceConfig:
    """Load ``workspaces/<name>/workspace.yaml``; a missing file means defaults.

    Raises:
        ConfigError: listing every problem found, each with file:line.
    """
    env = os.environ if env is None else env
    path = directory / WORKSPACE_FILE
    data: Any = {}
    lines: dict[Path_, int] = {}
    if path.exists():
        data, lines = read_yaml(path)
    problems: list[Problem] = []
    if not isinstance(data, dict):
        raise ConfigError([Problem(str(path), 1, "", "must be a mapping of keys to values")])
    data = interpolate_env(data, str(path), lines, problems, env)
    data.setdefault("name", directory.name)
    if data["name"] != directory.name:
        problems.append(
            Problem(
                str(path),
                lines.get(("name",)),
                "name",
                f"is `{data['name']}` but the folder is `{directory.name}`; rename one so they match",
            )
        )
    config = validate(WorkspaceConfig, data, str(path), lines, problems)
    if problems:
        raise ConfigError(problems)
    assert isinstance(config, WorkspaceConfig)
    return config


def resolve_uri(uri: str, root: Path) -> str:
    """Make a relative ``sqlite:///`` path absolute against the project root, and pin the
    PostgreSQL driver to psycopg 3 (SQLAlchemy's bare ``postgresql://`` means psycopg2)."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        relative = uri.removeprefix("sqlite:///")
        if relative and relative != ":memory:":
            path = (root / relative).resolve()
            path.parent.mkdir(parents=True, exist_ok=True)
            return f"sqlite:///{path}"
    if uri.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + uri.split("://", 1)[1]
    return uri
