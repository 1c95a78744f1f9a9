"""Every error Ratatouille raises on purpose.

One root, a shallow tree. Each message says what happened and what to do about it::

    RatatouilleError
    ├── ConfigError            a project file is invalid (lists every problem, with file:line)
    ├── ProjectNotFoundError   no ratatouille.yaml here or above
    ├── CatalogError           the Iceberg catalog or storage cannot be reached or used
    │   ├── TableNotFoundError
    │   └── CommitConflictError   another writer committed first and retrying did not help
    ├── SchemaError            data does not fit the table (checked before anything is written)
    ├── DataError              data cannot be written as asked (NULL or duplicate merge keys, ...)
    ├── ConnectorError         a source cannot be reached or read (never shows credentials)
    ├── PipelineError          a model is invalid or failed (file and line of the user's code)
    │   └── TestFailure        an error-severity test failed: the model was not published
    ├── QueryError             SQL failed: parse, bind or runtime error, with the position
    └── AuthError              a user or token cannot be managed as asked (unknown, duplicate, ...)
        ├── AuthenticationError    no token, or an unknown, expired or revoked one
        └── PermissionDeniedError  the token's role or workspace does not allow this

Surfaces decide how errors look: the CLI prints one red line, the API maps classes to statuses.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class RatatouilleError(Exception):
    """Root of every error Ratatouille raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One problem found in a project file."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        key = f" {self.key}:" if self.key else ""
        return f"{where}:{key} {self.message}"


class ConfigError(RatatouilleError):
    """A project file is invalid. Carries every problem found, not just the first."""

    def __init__(self, problems: Sequence[Problem] | str) -> None:
        self.problems: list[Problem] = (
            [Problem("", None, "", problems)] if isinstance(problems, str) else list(problems)
        )
        if len(self.problems) == 1:
            text = str(self.problems[0]).lstrip(": ")
        else:
            text = f"{len(self.problems)} problems in the project configuration:\n" + "\n".join(
                f"  - {p}" for p in self.problems
            )
        super().__init__(text)


class ProjectNotFoundError(RatatouilleError):
    """No ``ratatouille.yaml`` in the given directory or any parent."""


class CatalogError(RatatouilleError):
    """The Iceberg catalog or the warehouse storage cannot be used."""


class TableNotFoundError(CatalogError):
    """A table that does not exist was named."""

    def __init__(self, name: str, existing: Iterable[str]) -> None:
        name = name.strip('"')
        self.name = name
        self.existing = sorted(existing)
        from difflib import get_close_matches

        close = get_close_matches(name, self.existing, n=1)
        hint = f"; did you mean `{close[0]}`?" if close else "."
        listing = ", ".join(self.existing[:20]) if self.existing else "none yet (run `rat run` or `rat ingest`)"
        super().__init__(f"table `{name}` does not exist{hint} Tables: {listing}")


class CommitConflictError(CatalogError):
    """Another writer changed the table at the same time and retrying did not resolve it."""


class SchemaError(RatatouilleError):
    """Incoming data does not fit the table's schema; nothing was written."""


class DataError(RatatouilleError):
    """Data cannot be written as asked (for example NULL or duplicate merge keys); nothing was written."""


class ConnectorError(RatatouilleError):
    """A source cannot be reached or read. Messages never contain credentials."""


class PipelineError(RatatouilleError):
    """A model or source definition is invalid, or its run failed."""


class TestFailure(PipelineError):
    """An error-severity test failed, so the model's output was not published."""

    __test__ = False  # not a pytest test class


class QueryError(RatatouilleError):
    """A SQL statement failed to parse, bind or run."""


class AuthError(RatatouilleError):
    """A user or token cannot be managed as asked (unknown, duplicate, invalid)."""


class AuthenticationError(AuthError):
    """The request has no token, or its token is unknown, expired or revoked."""


class PermissionDeniedError(AuthError):
    """The token's role or workspace does not allow what was asked."""
