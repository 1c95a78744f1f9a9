"""The API's one mapping from error classes to HTTP statuses."""

from __future__ import annotations

import inspect

import pytest

from ratatouille import errors
from ratatouille.api.errors import NotAcceptableError, NotFoundError, UnavailableError, UnknownParameterError, status_of
from ratatouille.errors import (
    AuthenticationError,
    AuthError,
    CatalogError,
    CommitConflictError,
    ConfigError,
    ConnectorError,
    DataError,
    PermissionDeniedError,
    PipelineError,
    ProjectNotFoundError,
    QueryError,
    RatatouilleError,
    SchemaError,
    TableNotFoundError,
    TestFailure,
)
from ratatouille.sandbox import QueryRefusedError, QueryTimeoutError

EXPECTED: dict[type[BaseException], int] = {
    RatatouilleError: 400,
    AuthError: 400,
    AuthenticationError: 401,
    PermissionDeniedError: 403,
    ConfigError: 422,
    ProjectNotFoundError: 500,
    CatalogError: 503,
    TableNotFoundError: 404,
    CommitConflictError: 503,
    SchemaError: 400,
    DataError: 400,
    ConnectorError: 502,
    PipelineError: 422,
    TestFailure: 422,
    QueryError: 400,
    QueryRefusedError: 400,
    QueryTimeoutError: 400,  # sending it again would time out again: not a status clients retry
    NotFoundError: 404,
    NotAcceptableError: 406,
    UnknownParameterError: 422,
    UnavailableError: 503,
    ValueError: 500,
}


def _instance(cls: type[BaseException]) -> BaseException:
    if cls is TableNotFoundError:
        return TableNotFoundError("x", [])
    return cls("message")


@pytest.mark.parametrize(("cls", "status"), EXPECTED.items(), ids=[c.__name__ for c in EXPECTED])
def test_each_error_class_has_its_status(cls: type[BaseException], status: int) -> None:
    assert status_of(_instance(cls)) == status


def test_every_error_of_the_errors_module_has_a_decided_status() -> None:
    defined = {
        obj
        for _name, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, RatatouilleError) and obj.__module__ == errors.__name__
    }
    assert {AuthError, AuthenticationError, PermissionDeniedError} <= defined  # the auth errors live there
    assert defined - set(EXPECTED) == set(), "give the new error class a status in ratatouille/api/errors.py"
