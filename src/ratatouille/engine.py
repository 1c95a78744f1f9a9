"""The DuckDB engine: one connection per workspace, configured by the profile, air-gapped.

Extensions load from the pinned ``duckdb-extension-*`` wheels by file path, when first
needed; DuckDB's autoinstall and autoload are off, so nothing is ever downloaded. An explicit
``INSTALL name`` (in a model, say) looks only in an empty local repository and fails at once with
:data:`NO_DOWNLOADS`, instead of trying DuckDB's extension server. The profile sets
``memory_limit``, ``threads`` and a ``temp_directory`` to spill to.
"""

from __future__ import annotations

import importlib.resources
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ratatouille.config import EngineConfig, ProfileName, S3Config
from ratatouille.errors import CatalogError, RatatouilleError

if TYPE_CHECKING:
    import duckdb

# Load order matters: iceberg needs avro.
EXTENSIONS = ("avro", "iceberg", "httpfs", "excel")
# The folder DuckDB's INSTALL is pointed at, under the engine's temp directory. It is never
# created, so an INSTALL fails without touching the network; its name shows in DuckDB's message.
OFFLINE_REPOSITORY = "extension-repository-offline"
NO_DOWNLOADS = (
    "Ratatouille never downloads DuckDB extensions, so INSTALL cannot work here. The extensions it "
    "uses ({}) come from pinned duckdb-extension-* wheels and load by themselves when a query needs them"
).format(", ".join(EXTENSIONS))


@dataclass(frozen=True)
class Profile:
    """Resolved engine limits for one machine size."""

    name: str
    memory_limit: str
    threads: int
    max_parallel_pipelines: int


_PROFILES: dict[str, tuple[str, int, int]] = {
    "tiny": ("1GB", 1, 1),
    "small": ("2GB", 2, 2),
    "medium": ("6GB", 4, 4),
    "large": ("24GB", 16, 8),
}


def total_memory_bytes() -> int:
    """Physical memory of this machine (or of its cgroup limit when lower)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def resolve_profile(name: ProfileName, overrides: EngineConfig) -> Profile:
    """Pick the profile's limits; ``auto`` chooses by RAM. Engine overrides win."""
    if name == "auto":
        gib = total_memory_bytes() / 2**30
        name = "tiny" if gib < 4.5 else "small" if gib < 10 else "medium" if gib < 40 else "large"
    memory, threads, parallel = _PROFILES[name]
    threads = min(threads, os.cpu_count() or 1)
    return Profile(
        name=name,
        memory_limit=overrides.memory_limit or memory,
        threads=overrides.threads or threads,
        max_parallel_pipelines=overrides.max_parallel_pipelines or parallel,
    )


def extension_path(name: str) -> Path:
    """The extension file shipped in the ``duckdb-extension-<name>`` wheel.

    Raises:
        RatatouilleError: the wheel is not installed.
    """
    import duckdb

    try:
        root = importlib.resources.files(f"duckdb_extension_{name}")
    except ModuleNotFoundError as exc:
        raise RatatouilleError(
            f"the DuckDB `{name}` extension is not installed; install `duckdb-extension-{name}=="
            f"{duckdb.__version__}` (Ratatouille never downloads extensions at run time)"
        ) from exc
    return Path(str(root)) / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"


def connect(profile: Profile, temp_directory: Path, s3: S3Config | None = None) -> duckdb.DuckDBPyConnection:
    """Open an in-memory DuckDB connection with the profile's limits and the extensions loaded.

    Raises:
        RatatouilleError: an extension wheel is missing or does not load.
    """
    import duckdb

    temp_directory.mkdir(parents=True, exist_ok=True)
    offline = str(temp_directory / OFFLINE_REPOSITORY)
    con = duckdb.connect(
        config={
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "memory_limit": profile.memory_limit,
            "threads": profile.threads,
            "temp_directory": str(temp_directory),
            # Extensions are loaded by absolute path from the wheels, never from ~/.duckdb.
            "extension_directory": str(temp_directory / "extensions"),
            # INSTALL (and FORCE INSTALL, UPDATE EXTENSIONS) look in a local folder that does not
            # exist instead of http://extensions.duckdb.org: they fail at once, offline.
            "custom_extension_repository": offline,
            "autoinstall_extension_repository": offline,
            "allow_community_extensions": False,
        }
    )
    con.execute("SET TimeZone = 'UTC'")
    if s3 is not None:
        configure_s3(con, s3)
    return con


def load_extensions(con: duckdb.DuckDBPyConnection, *names: str) -> None:
    """Load extensions from their wheels (each once per connection; ``iceberg`` brings ``avro``).

    Loading costs about 0.1-0.4 s each, so sessions load only what a statement needs.

    Raises:
        RatatouilleError: a wheel is missing or the extension does not load.
    """
    import duckdb

    wanted = [n for n in EXTENSIONS if n in names or (n == "avro" and "iceberg" in names)]
    loaded = {r[0] for r in con.execute("SELECT extension_name FROM duckdb_extensions() WHERE loaded").fetchall()}
    for name in wanted:
        if name in loaded:
            continue
        path = extension_path(name)
        try:
            con.execute(f"LOAD {literal(str(path))}")
        except duckdb.Error as exc:
            raise RatatouilleError(f"cannot load the DuckDB `{name}` extension from {path}: {exc}") from exc


def register_data(con: duckdb.DuckDBPyConnection, data: Any) -> tuple[str, Callable[[], None]]:
    """Make data queryable on ``con``: returns a ``SELECT`` over it and a function that cleans up.

    ``data`` may be SQL text, an Arrow table / record batch / record batch reader (streamed), a
    list of dicts, a pandas or polars data frame, or a DuckDB relation of ``con``.

    Raises:
        RatatouilleError: the data is of an unsupported kind.
    """
    if isinstance(data, str):
        return data.strip().rstrip(";"), lambda: None
    if type(data).__name__ == "DuckDBPyRelation":
        return data.sql_query(), lambda: None
    import uuid

    import pyarrow as pa

    name = f"__rat_in_{uuid.uuid4().hex}"
    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    elif isinstance(data, list):
        data = pa.Table.from_pylist(data)
    elif hasattr(data, "to_arrow") and not isinstance(data, pa.Table | pa.RecordBatchReader):
        data = data.to_arrow()  # polars
    try:
        con.register(name, data)
    except Exception as exc:
        raise RatatouilleError(
            f"cannot write a {type(data).__name__}; pass SQL, an Arrow table or stream, "
            "a list of dicts, or a pandas/polars data frame"
        ) from exc

    def cleanup() -> None:
        con.unregister(name)

    return f"SELECT * FROM {name}", cleanup


def configure_s3(con: duckdb.DuckDBPyConnection, s3: S3Config) -> None:
    """Give DuckDB's httpfs the project's S3 endpoint and credentials as a secret.

    Raises:
        CatalogError: DuckDB rejects the settings.
    """
    import duckdb

    load_extensions(con, "httpfs")
    options = [f"REGION {_literal(s3.region)}"]
    if s3.access_key_id:
        options.append(f"KEY_ID {_literal(s3.access_key_id)}")
    if s3.secret_access_key:
        options.append(f"SECRET {_literal(s3.secret_access_key.get_secret_value())}")
    if s3.endpoint:
        endpoint = s3.endpoint
        use_ssl = not endpoint.startswith("http://")
        endpoint = endpoint.removeprefix("http://").removeprefix("https://").rstrip("/")
        options.append(f"ENDPOINT {_literal(endpoint)}")
        options.append(f"USE_SSL {str(use_ssl).lower()}")
    options.append(f"URL_STYLE {_literal('path' if s3.path_style else 'vhost')}")
    try:
        con.execute(f"CREATE OR REPLACE SECRET rat_s3 (TYPE s3, {', '.join(options)})")
    except duckdb.Error as exc:
        raise CatalogError(f"cannot configure S3 access for DuckDB: {exc}") from exc


def error_message(exc: BaseException) -> str:
    """DuckDB's message for ``exc``, explained when it is an ``INSTALL`` that cannot download."""
    text = str(exc).strip()
    if any(hint in text for hint in (OFFLINE_REPOSITORY, "Failed to download extension", "Install it first")):
        return f"{text.splitlines()[0]}\n{NO_DOWNLOADS}"
    return text


def literal(value: str) -> str:
    """A SQL string literal. Used instead of ``?`` parameters: DuckDB's parameter binding
    imports pandas, which costs 0.4 s of start-up."""
    return "'" + value.replace("'", "''") + "'"


_literal = literal


def quote(identifier: str) -> str:
    """Quote a SQL identifier for DuckDB."""
    return '"' + identifier.replace('"', '""') + '"'
