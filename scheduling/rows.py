"""One-statement reads and writes of a single row, for the path every run takes.

A worker records each run with a handful of statements (:mod:`scheduling.executions`).
Building each of them as a queryset (cloning, resolving lookups, compiling the columns)
costs the worker several times the CPU the database spends running it; on a short run
that was most of the run's cost, and what kept a 2-process worker far below the
throughput it must sustain (``benchmarks/worker_throughput.py``). These helpers run one
plain SQL statement, portable between PostgreSQL and SQLite, whose text is built once
per shape; values go in prepared by the model fields exactly as the ORM prepares them
(``Field.get_db_prep_save``, ``pre_save``) and come out through the same converters
(``from_db_value`` and the backend's), into instances made by ``Model.from_db``. Model
save signals are not sent (as with ``QuerySet.update``). Everything else uses the ORM.
"""

import functools
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from django.db import connection
from django.db.backends.utils import CursorWrapper
from django.db.models import Field, Model


@contextmanager
def pipeline() -> Iterator[None]:
    """Send the statements of the block without waiting for each answer (PostgreSQL).

    For statements none of which needs the answer of another: a transaction of writes
    nobody reads until it commits (psycopg's pipeline mode sends the statements and
    COMMIT in one round trip instead of one each), or reads sent together and fetched
    at the end. An error surfaces where an answer is read (at the latest at the commit)
    and rolls everything back as usual.
    On SQLite (in-process, no round trips) a no-op.
    """
    if connection.vendor != "postgresql":
        yield
        return
    connection.ensure_connection()
    with connection.wrap_database_errors, connection.connection.pipeline():
        yield


@contextmanager
def cursor() -> Iterator[CursorWrapper]:
    """A cursor for statements whose text is fixed and whose values change every run.

    On PostgreSQL it binds the values on the server, so that psycopg prepares each
    statement once per connection (after ``prepare_threshold`` runs, see the settings)
    and the database stops parsing and planning it for every run; Django's own cursors
    bind on the client, where nothing is ever prepared. Elsewhere, Django's cursor.
    """
    if connection.vendor != "postgresql":
        with connection.cursor() as plain:
            yield plain
        return
    connection.ensure_connection()
    bound = psycopg.Cursor(connection.connection)  # psycopg's default: server-side binding
    wrapped = (
        connection.make_debug_cursor(bound)  # as Django's: logged when queries are
        if connection.queries_logged
        else connection.make_cursor(bound)
    )
    with wrapped:
        yield wrapped


def _fields(model: type[Model], names: Iterable[str]) -> list[Field]:
    return [model._meta.get_field(name) for name in names]


def _prepared(fields: list[Field], values: dict[str, Any]) -> list[Any]:
    return [field.get_db_prep_save(values[field.name], connection) for field in fields]


@functools.cache
def _get_sql(model: type[Model], for_update: bool) -> str:
    quote = connection.ops.quote_name
    meta = model._meta
    columns = ", ".join(quote(field.column) for field in meta.concrete_fields)
    sql = f"SELECT {columns} FROM {quote(meta.db_table)} WHERE {quote(meta.pk.column)} = %s"
    if for_update and connection.features.has_select_for_update:
        sql += " FOR UPDATE"
    return sql


@functools.cache
def _attnames(model: type[Model]) -> list[str]:
    return [field.attname for field in model._meta.concrete_fields]


def _column_converters(model: type[Model], field: Field) -> tuple[list, Any]:
    """The converters the ORM applies to ``field``'s column as it comes from the database."""
    column = field.get_col(model._meta.db_table)
    return connection.ops.get_db_converters(column) + column.get_db_converters(connection), column


@functools.cache
def _field_converters(model: type[Model], name: str) -> tuple[list, Any]:
    return _column_converters(model, model._meta.get_field(name))


def from_db(model: type[Model], name: str, value: Any) -> Any:
    """``value`` of ``model``'s field ``name``, read by plain SQL, as the ORM would load it
    (a ``MIN()`` of a datetime column is UTC text on SQLite, an aware datetime elsewhere)."""
    convert, column = _field_converters(model, name)
    for converter in convert:
        value = converter(value, column, connection)
    return value


@functools.cache
def _converters(model: type[Model]) -> list[tuple[int, list, Any]]:
    """For each column that needs it, the converters the ORM would apply."""
    found = []
    for index, field in enumerate(model._meta.concrete_fields):
        convert, column = _column_converters(model, field)
        if convert:
            found.append((index, convert, column))
    return found


def row_get(model: type[Model], pk: Any, *, for_update: bool = False) -> Model | None:
    """The row ``pk`` of ``model`` as an instance (``None`` if there is none); with
    ``for_update`` its row is locked until the transaction ends (``SELECT ... FOR
    UPDATE``; SQLite's transaction already holds the write lock)."""
    with cursor() as c:
        c.execute(_get_sql(model, for_update), [pk])
        row = c.fetchone()
    return _instance(model, row)


def row_get_with(
    model: type[Model], pk: Any, sql: str, params: list[Any], *, for_update: bool = False
) -> tuple[Model | None, tuple[Any, ...] | None]:
    """:func:`row_get`, and the first row of one more query, sent together (in a pipeline
    on PostgreSQL: one round trip for both). The server runs them in order, so with
    ``for_update`` the second query runs once the lock is held, and sees what was
    committed before."""
    with pipeline(), cursor() as first, cursor() as second:
        first.execute(_get_sql(model, for_update), [pk])
        second.execute(sql, params)
        row, other = first.fetchone(), second.fetchone()
    return _instance(model, row), other


def _instance(model: type[Model], row: tuple[Any, ...] | None) -> Model | None:
    if row is None:
        return None
    values = list(row)
    for index, convert, column in _converters(model):
        for converter in convert:
            values[index] = converter(values[index], column, connection)
    return model.from_db(connection.alias, _attnames(model), values)


@functools.cache
def _insert_sql(model: type[Model]) -> tuple[str, list[Field]]:
    quote = connection.ops.quote_name
    meta = model._meta
    fields = [field for field in meta.concrete_fields if field is not meta.pk]
    columns = ", ".join(quote(field.column) for field in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({placeholders}) "
        f"RETURNING {quote(meta.pk.column)}"
    )
    return sql, fields


def row_insert(instance: Model) -> Model:
    """``INSERT`` ``instance`` (a new row, every field as the instance has it or its
    default) and set its primary key; return it."""
    sql, fields = _insert_sql(type(instance))
    params = [
        field.get_db_prep_save(field.pre_save(instance, add=True), connection) for field in fields
    ]
    with cursor() as c:
        c.execute(sql, params)
        instance.pk = c.fetchone()[0]
    instance._state.adding = False
    instance._state.db = connection.alias
    return instance


@functools.cache
def _update_sql(model: type[Model], names: tuple[str, ...], increments: tuple[str, ...]) -> str:
    quote = connection.ops.quote_name
    sets = [f"{quote(field.column)} = %s" for field in _fields(model, names)]
    sets += [f"{quote(f.column)} = {quote(f.column)} + 1" for f in _fields(model, increments)]
    meta = model._meta
    return f"UPDATE {quote(meta.db_table)} SET {', '.join(sets)} WHERE {quote(meta.pk.column)} = %s"


def row_update(model: type[Model], pk: Any, *, increment: Iterable[str] = (), **values: Any) -> int:
    """``UPDATE`` the row ``pk`` of ``model`` with ``values``, adding 1 to each field of
    ``increment``; return the number of rows changed (0 or 1)."""
    sql = _update_sql(model, tuple(values), tuple(increment))
    with cursor() as c:
        c.execute(sql, [*_prepared(_fields(model, values), values), pk])
        return c.rowcount


def rows_update(instances: Iterable[Model], names: Iterable[str]) -> None:
    """``UPDATE`` the fields ``names`` of each of ``instances`` (of one model) from its
    attributes, in one batch: psycopg sends the statements in a pipeline, SQLite runs them
    in process. What ``QuerySet.bulk_update`` does, without building a ``CASE`` per field
    per row (at a thousand rows that took the ORM the best part of a second)."""
    instances = list(instances)
    if not instances:
        return
    model = type(instances[0])
    names = tuple(names)
    fields = _fields(model, names)
    params = [
        [field.get_db_prep_save(getattr(obj, field.attname), connection) for field in fields]
        + [obj.pk]
        for obj in instances
    ]
    with cursor() as c:
        c.executemany(_update_sql(model, names, ()), params)


@functools.cache
def _upsert_sql(
    model: type[Model], names: tuple[str, ...], conflict: str, keep: tuple[str, ...] | None
) -> str:
    quote = connection.ops.quote_name
    fields = _fields(model, names)
    columns = ", ".join(quote(field.column) for field in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    target = quote(model._meta.get_field(conflict).column)
    if keep is None:
        action = "DO NOTHING"
    else:
        changed = [f for f in fields if f.name != conflict and f.name not in keep]
        action = "DO UPDATE SET " + ", ".join(
            f"{quote(f.column)} = excluded.{quote(f.column)}" for f in changed
        )
    return (
        f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES ({placeholders}) "
        f"ON CONFLICT ({target}) {action}"
    )


def row_upsert(
    model: type[Model],
    *,
    conflict: str,
    keep: Iterable[str] | None = (),
    **values: Any,
) -> None:
    """``INSERT`` a row of ``model`` with ``values``; if one with the same (unique)
    ``conflict`` field exists, overwrite it with ``values`` except the fields in ``keep``
    — or, with ``keep=None``, leave it as it is."""
    sql = _upsert_sql(model, tuple(values), conflict, None if keep is None else tuple(keep))
    with cursor() as c:
        c.execute(sql, _prepared(_fields(model, values), values))
