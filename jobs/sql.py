"""Many rows written at once, faster than the ORM's bulk methods, with the same conversions.

The ORM's bulk_update builds a CASE WHEN per field and row, and bulk_create
compiles every value through the query machinery: milliseconds of Python per
job, taken from a worker (the mirror) or from a request (a bulk create). These
run one statement for all the rows: COPY or `UPDATE ... FROM (VALUES ...)` on
PostgreSQL (its statement-level count trigger then fires once), a prepared
statement run for each row (executemany) elsewhere. Values still go through
each field's `pre_save` and `get_db_prep_save`, so they are stored exactly as
the ORM would store them. Neither sends signals nor reads anything back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from operator import attrgetter
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, models


def insert_rows(model: type[models.Model], objs: Sequence[Any]) -> None:
    """INSERT the objects: the columns bulk_create would write.

    A primary key the database assigns (an auto field) is not written and not
    read back; one set in Python (a UUID) is written.
    """
    with inserting(model, objs):
        pass


@contextlib.contextmanager
def inserting(model: type[models.Model], objs: Sequence[Any]) -> Iterator[None]:
    """`insert_rows`, with a block run while the database works through the rows.

    On PostgreSQL the rows stream to the server (COPY) before the block runs,
    and the statement completes when it ends: the server's work (indexes,
    triggers) overlaps whatever the block computes. An error in the block
    aborts the insert; an error of the insert is raised after the block.
    Elsewhere the rows are inserted before the block runs. The block must not
    use the database: the connection is busy with the insert.
    """
    db = connections[DEFAULT_DB_ALIAS]
    opts = model._meta
    fields = [
        field
        for field in opts.concrete_fields
        if not field.generated and not (field.primary_key and getattr(field, "db_returning", False))
    ]
    quote = db.ops.quote_name
    table = quote(opts.db_table)
    columns = ", ".join(quote(field.column) for field in fields)
    rows = _prepared(objs, [(field, _reader_for_insert(field)) for field in fields], db)
    with db.cursor() as cursor:
        if not rows:
            yield
        elif db.vendor == "postgresql":
            # The driver's own cursor (Django's has no COPY), its errors raised as Django's.
            with db.wrap_database_errors, cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
                yield
        else:
            marks = ", ".join(["%s"] * len(fields))
            cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)
            yield
    for obj in objs:  # saved: a later save() updates, as after bulk_create
        obj._state.adding = False
        obj._state.db = DEFAULT_DB_ALIAS


def _reader_for_insert(field: Any) -> Callable[[Any], Any]:
    """What an INSERT writes of a field: its `pre_save` (a timestamp set now, say), or the attribute."""
    if type(field).pre_save is models.Field.pre_save:
        return attrgetter(field.attname)
    return lambda obj: field.pre_save(obj, True)


def _prepared(objs: Sequence[Any], columns: Sequence[tuple[Any, Callable[[Any], Any]]], db: Any) -> list[list[Any]]:
    """Each object's values as the database takes them: `get_db_prep_save(read(obj))` per column.

    Rows written together mostly share values (type, queue, status, user, empty
    strings), and a field's conversion depends only on the value: each distinct
    value is converted once per field.
    """
    rows: list[list[Any]] = [[] for _ in objs]
    for field, read in columns:
        seen: dict[tuple[type, Any], Any] = {}
        convert = field.get_db_prep_save
        for row, obj in zip(rows, objs, strict=True):
            value = read(obj)
            if type(value) is float:  # 0.0 == -0.0: keep each as it is
                row.append(convert(value, db))
                continue
            try:
                key = (type(value), value)
                prepared = seen[key]
            except KeyError:
                prepared = seen[key] = convert(value, db)
            except TypeError:  # not hashable (a dict for a JSON field)
                prepared = convert(value, db)
            row.append(prepared)
    return rows


def update_rows(model: type[models.Model], objs: Sequence[Any], field_names: Sequence[str]) -> None:
    """UPDATE `field_names` of each object, by primary key."""
    if not objs:
        return
    db = connections[DEFAULT_DB_ALIAS]
    opts = model._meta
    fields = [opts.get_field(name) for name in field_names]
    concrete = [field for field in fields if isinstance(field, models.Field) and field.concrete]
    if len(concrete) != len(fields):
        raise ValueError(f"{model.__name__}: only concrete fields can be updated")
    quote = db.ops.quote_name
    table = quote(opts.db_table)
    pk = opts.pk
    params = _prepared(
        objs, [*((field, attrgetter(field.attname)) for field in concrete), (pk, attrgetter(pk.attname))], db
    )
    with db.cursor() as cursor:
        if db.vendor == "postgresql" and len(objs) > 1:
            columns: list[Any] = [*concrete, pk]
            row = "(" + ", ".join(f"%s::{field.cast_db_type(db)}" for field in columns) + ")"
            names = ", ".join(quote(field.column) for field in columns)
            sets = ", ".join(f"{quote(field.column)} = v.{quote(field.column)}" for field in concrete)
            cursor.execute(
                f"UPDATE {table} SET {sets} FROM (VALUES {', '.join([row] * len(objs))}) AS v ({names}) "
                f"WHERE {table}.{quote(pk.column)} = v.{quote(pk.column)}",
                [value for values in params for value in values],
            )
            return
        assignments = ", ".join(f"{quote(field.column)} = %s" for field in concrete)
        cursor.executemany(f"UPDATE {table} SET {assignments} WHERE {quote(pk.column)} = %s", params)
