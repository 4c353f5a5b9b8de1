"""Plain SQL for the statements every run and every beat pass executes.

One-statement reads and writes of a single row (:func:`row_get_with`, :func:`row_insert`,
:func:`row_update`, :func:`row_upsert`, :func:`insert_select`), portable between
PostgreSQL and SQLite, whose text is built once per shape. Values go in prepared by the
model fields exactly as the ORM prepares them (``Field.get_db_prep_save``, ``pre_save``)
and come out through the same converters, into instances made by ``Model.from_db``; no
model signal is sent (as with ``QuerySet.update``). Building each statement as a queryset
would cost a short run more CPU than the database spends on it.

On a worker a run's statements cost less than the waits for their answers, so
:func:`one_trip_transaction` sends a transaction's statements and commits them in one
round trip to PostgreSQL, :func:`cursor` lets PostgreSQL prepare them, and
:func:`round_trips` counts the waits (for the tests and benchmarks). Everything else in
the app uses the ORM.
"""

import functools
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from typing import Any

import psycopg
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, connections, transaction
from django.db.backends.utils import CursorWrapper
from django.db.models import Field, Model
from psycopg.waiting import Wait


@contextmanager
def one_trip_transaction() -> Iterator[None]:
    """Run the block's statements as one transaction, committed in one round trip to
    PostgreSQL.

    For statements none of which needs another's answer: read their cursors after the
    block. Nothing in the block may register an ``on_commit`` callback (Django sees no
    transaction here, so it would run before the commit). Inside an atomic block the
    statements join that transaction; on SQLite (in process, no round trips) this is
    ``atomic()``. On PostgreSQL, outside an atomic block:

    1. the statements go out in one psycopg pipeline with no BEGIN and no COMMIT: the
       server runs everything up to the pipeline's closing Sync as one implicit
       transaction, commits it there, or at the first error skips the rest and rolls it
       all back (``atomic()`` around a pipeline would cost three more round trips:
       psycopg syncs a pipeline whenever the autocommit mode changes);
    2. an exception raised in the block sends ROLLBACK before that Sync, which psycopg
       sends whatever happens and which would commit what was sent;
    3. after a database error the connection is closed: the server skipped statements
       psycopg counted as prepared, and a later one would name a statement that does
       not exist;
    4. a nested call is refused: a nested pipeline syncs, which would commit.
    """
    if connection.vendor != "postgresql":
        with transaction.atomic(savepoint=False):
            yield
        return
    connection.ensure_connection()
    raw = connection.connection
    if raw.pgconn.pipeline_status != psycopg.pq.PipelineStatus.OFF:
        # A nested pipeline sends a Sync when it starts and ends: it would commit.
        raise RuntimeError("one_trip_transaction() cannot be nested")
    joined = connection.in_atomic_block
    try:
        with connection.wrap_database_errors, raw.pipeline():
            try:
                yield
            except BaseException:
                if not joined:
                    with suppress(psycopg.Error):  # the pipeline may have failed already
                        raw.execute("ROLLBACK")
                raise
    except DatabaseError:
        if not joined:
            connection.close()
        raise


@contextmanager
def round_trips() -> Iterator[list[int]]:
    """Count the times the block waits for PostgreSQL to answer, in a one-item list; for
    the tests and benchmarks of what a run costs.

    Every exchange with the server goes through ``psycopg.Connection.wait``, driving a
    generator that says what it waits for; an exchange that waits to read (the server's
    answer) is one round trip. (Sending a pipeline waits for "read or write" to take in
    answers already there; that is not counted.) On SQLite always 0.
    """
    found = [0]
    if connection.vendor != "postgresql":
        yield found
        return
    connection.ensure_connection()
    raw = connection.connection
    original = raw.wait

    def counted(gen, *args, **kwargs):
        def watched():
            waited, value = False, None
            while True:
                try:
                    ready = gen.send(value)
                except StopIteration as stop:
                    return stop.value
                if not waited and ready == Wait.R:
                    waited = True
                    found[0] += 1
                value = yield ready

        return original(watched(), *args, **kwargs)

    raw.wait = counted
    try:
        yield found
    finally:
        del raw.wait


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


def row_get_with(
    model: type[Model], pk: Any, *queries: tuple[str, list[Any]], for_update: bool = False
) -> tuple[Model | None, list[tuple[Any, ...] | None]]:
    """The row ``pk`` of ``model`` as an instance (``None`` if there is none), and the first
    row of each of ``queries`` (statement, parameters), sent together in
    :func:`one_trip_transaction`: one round trip on PostgreSQL. With ``for_update`` the
    row is locked until the transaction ends (SQLite's already holds the write lock). The
    server runs them in order, each seeing what was committed before it started, so with
    ``for_update`` the queries run once the lock is held. Outside an atomic block the
    statements are a transaction of their own, committed before this returns."""
    pipelined = connection.vendor == "postgresql"
    with ExitStack() as cursors:
        first = cursors.enter_context(cursor())
        others = [cursors.enter_context(cursor()) for _ in queries]
        with one_trip_transaction():
            first.execute(_get_sql(model, for_update), [pk])
            for other, (sql, params) in zip(others, queries, strict=True):
                other.execute(sql, params)
            if not pipelined:
                # SQLite commits no statement still in progress (an INSERT ... RETURNING).
                read = [c.fetchone() for c in (first, *others)]
        if pipelined:
            # Read once the statements are synced: a fetch before is a round trip of its own.
            read = [c.fetchone() for c in (first, *others)]
        return _instance(model, read[0]), read[1:]


def _instance(model: type[Model], row: tuple[Any, ...] | None) -> Model | None:
    if row is None:
        return None
    values = list(row)
    for index, convert, column in _converters(model):
        for converter in convert:
            values[index] = converter(values[index], column, connection)
    return model.from_db(connection.alias, _attnames(model), values)


@functools.cache
def _insert_fields(model: type[Model]) -> tuple[list[Field], str]:
    """The fields an insert writes (all but the primary key), and their column list."""
    meta = model._meta
    fields = [field for field in meta.concrete_fields if field is not meta.pk]
    return fields, ", ".join(connection.ops.quote_name(field.column) for field in fields)


@functools.cache
def _insert_sql(model: type[Model]) -> tuple[str, list[Field]]:
    quote = connection.ops.quote_name
    fields, columns = _insert_fields(model)
    placeholders = ", ".join(["%s"] * len(fields))
    sql = (
        f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES ({placeholders}) "
        f"RETURNING {quote(model._meta.pk.column)}"
    )
    return sql, fields


def _insert_values(instance: Model, fields: list[Field], db: Any = connection) -> list[Any]:
    """``instance``'s values of ``fields`` for an insert, as the ORM prepares them."""
    return [field.get_db_prep_save(field.pre_save(instance, add=True), db) for field in fields]


def inserted(instance: Model, pk: Any) -> Model:
    """``instance``, now the row ``pk`` that an insert wrote (as ``Model.save()`` leaves it)."""
    instance.pk = pk
    instance._state.adding = False
    instance._state.db = connection.alias
    return instance


def row_insert(instance: Model) -> Model:
    """``INSERT`` ``instance`` (a new row, every field as the instance has it or its
    default) and set its primary key; return it."""
    sql, fields = _insert_sql(type(instance))
    with cursor() as c:
        c.execute(sql, _insert_values(instance, fields))
        return inserted(instance, c.fetchone()[0])


@functools.cache
def _insert_select_sql(
    model: type[Model], source: str, computed: tuple[tuple[str, str], ...], where: str
) -> tuple[str, list[Field]]:
    quote = connection.ops.quote_name
    fields, columns = _insert_fields(model)
    expressions = dict(computed)
    values = ", ".join(expressions.get(field.name, "%s") for field in fields)
    sql = (
        f"INSERT INTO {quote(model._meta.db_table)} ({columns}) SELECT {values} "
        f"FROM {source} WHERE {where} RETURNING {quote(model._meta.pk.column)}"
    )
    return sql, [field for field in fields if field.name not in expressions]


def insert_select(
    instance: Model, *, source: str, computed: dict[str, str], where: str, params: list[Any]
) -> tuple[str, list[Any]]:
    """The statement (and its parameters) that inserts ``instance`` only if ``where``
    holds for a row of ``source``; it returns the new primary key (for :func:`inserted`),
    or no row.

    The fields named in ``computed`` take the value of an SQL expression over that row
    instead of the instance's; every other field is the instance's, prepared as
    :func:`row_insert` prepares it. ``params`` are the values of ``where``'s placeholders.
    """
    sql, fields = _insert_select_sql(type(instance), source, tuple(sorted(computed.items())), where)
    return sql, _insert_values(instance, fields) + list(params)


@functools.cache
def _update_sql(
    model: type[Model], names: tuple[str, ...], increments: tuple[str, ...], where: str
) -> str:
    quote = connection.ops.quote_name
    sets = [f"{quote(field.column)} = %s" for field in _fields(model, names)]
    sets += [f"{quote(f.column)} = {quote(f.column)} + 1" for f in _fields(model, increments)]
    meta = model._meta
    condition = f" AND {where}" if where else ""
    return (
        f"UPDATE {quote(meta.db_table)} SET {', '.join(sets)}"
        f" WHERE {quote(meta.pk.column)} = %s{condition}"
    )


def update_statement(
    model: type[Model],
    pk: Any,
    *,
    increment: Iterable[str] = (),
    where: tuple[str, list[Any]] = ("", []),
    **values: Any,
) -> tuple[str, list[Any]]:
    """The ``UPDATE`` of the row ``pk`` of ``model`` with ``values``, adding 1 to each field
    of ``increment``, only if the SQL condition ``where`` (text, parameters) holds too."""
    condition, params = where
    sql = _update_sql(model, tuple(values), tuple(increment), condition)
    return sql, [*_prepared(_fields(model, values), values), pk, *params]


def row_update(model: type[Model], pk: Any, **options: Any) -> int:
    """Run :func:`update_statement`; return the number of rows changed (0 or 1)."""
    with cursor() as c:
        c.execute(*update_statement(model, pk, **options))
        return c.rowcount


def rows_update(instances: Iterable[Model], names: Iterable[str]) -> None:
    """``UPDATE`` the fields ``names`` of each of ``instances`` (of one model) from its
    attributes: on PostgreSQL in one statement whatever the number of rows (``UPDATE …
    FROM unnest(…)``, one array parameter per column: ten thousand rows in tens of
    milliseconds, and no statement of tens of thousands of placeholders for the driver to
    parse), on SQLite a statement per row, in process. What ``QuerySet.bulk_update`` does,
    without building a ``CASE`` per field per row (at a thousand rows that took the ORM the
    best part of a second)."""
    instances = list(instances)
    if not instances:
        return
    model = type(instances[0])
    names = tuple(names)
    fields = _fields(model, names)
    if connection.vendor != "postgresql":
        rows = [[*_prepared_of(obj, fields), obj.pk] for obj in instances]
        with cursor() as c:
            c.executemany(_update_sql(model, names, (), ""), rows)
        return
    db = connections[DEFAULT_DB_ALIAS]  # not the proxy: a look-up less for each value
    columns = [
        [field.get_db_prep_save(getattr(obj, field.attname), db) for obj in instances]
        for field in fields
    ]
    columns.append([obj.pk for obj in instances])
    with cursor() as c:
        c.execute(_update_unnest_sql(model, names), columns)


def _prepared_of(instance: Model, fields: list[Field]) -> list[Any]:
    return [
        field.get_db_prep_save(getattr(instance, field.attname), connection) for field in fields
    ]


def _array_casts(fields: list[Field]) -> str:
    return ", ".join(f"%s::{field.cast_db_type(connection)}[]" for field in fields)


@functools.lru_cache(maxsize=8)
def _update_unnest_sql(model: type[Model], names: tuple[str, ...]) -> str:
    quote = connection.ops.quote_name
    fields = [*_fields(model, names), model._meta.pk]
    columns = ", ".join(f"c{index}" for index in range(len(fields)))
    sets = ", ".join(f"{quote(field.column)} = v.c{i}" for i, field in enumerate(fields[:-1]))
    return (
        f"UPDATE {quote(model._meta.db_table)} AS t SET {sets}"
        f" FROM unnest({_array_casts(fields)}) AS v({columns})"
        f" WHERE t.{quote(model._meta.pk.column)} = v.c{len(fields) - 1}"
    )


def rows_insert(instances: Iterable[Model], *, ignore_conflicts: bool = False) -> None:
    """``INSERT`` ``instances`` (of one model, primary keys left to the database) without
    reading back their keys: ``bulk_create`` spends most of its time preparing each value
    through the ORM. On PostgreSQL one statement (``INSERT … SELECT * FROM unnest(…)``,
    one array parameter per column); on SQLite as many rows a statement as its oldest
    limit of 999 parameters allows."""
    instances = list(instances)
    if not instances:
        return
    model = type(instances[0])
    fields, columns = _insert_fields(model)
    quote = connection.ops.quote_name
    conflict = " ON CONFLICT DO NOTHING" if ignore_conflicts else ""
    table = quote(model._meta.db_table)
    if connection.vendor == "postgresql":
        db = connections[DEFAULT_DB_ALIAS]  # not the proxy: a look-up less for each value
        rows = [_insert_values(obj, fields, db) for obj in instances]
        with cursor() as c:
            c.execute(
                f"INSERT INTO {table} ({columns})"
                f" SELECT * FROM unnest({_array_casts(fields)}){conflict}",
                [list(column) for column in zip(*rows, strict=True)],
            )
        return
    row = f"({', '.join(['%s'] * len(fields))})"
    per_statement = max(1, 900 // len(fields))
    with cursor() as c:
        for start in range(0, len(instances), per_statement):
            chunk = instances[start : start + per_statement]
            c.execute(
                f"INSERT INTO {table} ({columns}) VALUES {', '.join([row] * len(chunk))}{conflict}",
                [v for obj in chunk for v in _insert_values(obj, fields)],
            )


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
