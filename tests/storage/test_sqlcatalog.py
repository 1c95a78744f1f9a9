"""Our SQL catalog keeps PyIceberg's tables and semantics, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.exceptions import (
    CommitFailedException,
    NamespaceAlreadyExistsError,
    NamespaceNotEmptyError,
    NoSuchNamespaceError,
    NoSuchTableError,
    TableAlreadyExistsError,
)

from ratatouille.storage.sqlcatalog import SqlCatalog

ROWS = pa.table({"id": pa.array([1, 2], pa.int64()), "name": pa.array(["a", "b"])})


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def uri(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.db'}"
    else:
        yield request.getfixturevalue("postgres_url")


def _ours(uri: str, warehouse: Path) -> SqlCatalog:
    return SqlCatalog("rat", uri=uri, warehouse=f"file://{warehouse}")


def test_tables_round_trip_with_pyiceberg_s_own_sql_catalog(uri: str, tmp_path: Path) -> None:
    from pyiceberg.catalog.sql import SqlCatalog as PyIcebergSqlCatalog

    warehouse = tmp_path / "warehouse"
    theirs = PyIcebergSqlCatalog("rat", uri=uri, warehouse=f"file://{warehouse}")
    theirs.create_namespace(("ws", "bronze"))
    theirs.create_table(("ws", "bronze", "made_by_pyiceberg"), schema=ROWS.schema).append(ROWS)

    ours = _ours(uri, warehouse)
    assert ours.load_table(("ws", "bronze", "made_by_pyiceberg")).scan().to_arrow().num_rows == 2
    ours.create_table(("ws", "bronze", "made_by_us"), schema=ROWS.schema).append(ROWS)
    ours.load_table(("ws", "bronze", "made_by_us")).append(ROWS)

    assert sorted(theirs.list_tables(("ws", "bronze"))) == sorted(ours.list_tables(("ws", "bronze")))
    assert theirs.load_table(("ws", "bronze", "made_by_us")).scan().to_arrow().num_rows == 4
    assert ours.list_namespaces() == [("ws",)] and ours.list_namespaces("ws") == [("ws", "bronze")]
    ours.close()
    theirs.close()


def test_a_pointer_swap_that_lost_a_race_fails_and_changes_nothing(
    uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyiceberg.table.update import SetPropertiesUpdate

    warehouse = tmp_path / "warehouse"
    catalog = _ours(uri, warehouse)
    catalog.create_namespace(("ws", "silver"))
    ident = ("ws", "silver", "t")
    catalog.create_table(ident, schema=ROWS.schema)
    other = _ours(uri, warehouse)  # another process
    write_metadata = catalog._write_metadata

    def racing(*args: object, **kwargs: object) -> None:
        write_metadata(*args, **kwargs)  # type: ignore[arg-type]
        other.load_table(ident).append(ROWS)  # lands between our read and our pointer swap

    monkeypatch.setattr(catalog, "_write_metadata", racing)
    with pytest.raises(CommitFailedException, match="updated by another process"):
        catalog.commit_table(catalog.load_table(ident), (), (SetPropertiesUpdate(updates={"k": "v"}),))
    monkeypatch.undo()
    table = catalog.load_table(ident)
    assert table.scan().to_arrow().num_rows == 2 and "k" not in table.properties
    catalog.close()
    other.close()


def test_names_namespaces_and_renames_behave_as_pyiceberg_s(uri: str, tmp_path: Path) -> None:
    catalog = _ours(uri, tmp_path / "warehouse")
    with pytest.raises(NoSuchNamespaceError):
        catalog.create_table(("ws", "gold", "t"), schema=ROWS.schema)
    catalog.create_namespace(("ws", "gold"), {"owner": "data"})
    with pytest.raises(NamespaceAlreadyExistsError):
        catalog.create_namespace(("ws", "gold"))
    catalog.update_namespace_properties(("ws", "gold"), removals={"owner"}, updates={"team": "bi"})
    assert catalog.load_namespace_properties(("ws", "gold")) == {"team": "bi"}

    catalog.create_table(("ws", "gold", "t"), schema=ROWS.schema)
    with pytest.raises(TableAlreadyExistsError):
        catalog.create_table(("ws", "gold", "t"), schema=ROWS.schema)
    catalog.create_table(("ws", "gold", "other"), schema=ROWS.schema)
    with pytest.raises(TableAlreadyExistsError):
        catalog.rename_table(("ws", "gold", "other"), ("ws", "gold", "t"))
    catalog.rename_table(("ws", "gold", "other"), ("ws", "gold", "renamed"))
    assert catalog.table_exists(("ws", "gold", "renamed")) and not catalog.table_exists(("ws", "gold", "other"))

    with pytest.raises(NamespaceNotEmptyError):
        catalog.drop_namespace(("ws", "gold"))
    catalog.drop_table(("ws", "gold", "t"))
    catalog.drop_table(("ws", "gold", "renamed"))
    with pytest.raises(NoSuchTableError):
        catalog.drop_table(("ws", "gold", "t"))
    catalog.drop_namespace(("ws", "gold"))
    assert not catalog.namespace_exists(("ws", "gold"))
    catalog.close()
