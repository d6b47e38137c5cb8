"""Statements of the expert's hot path, written as SQL once and run many times.

Building a queryset and compiling it to SQL costs Django more CPU than the database spends
running the statement: on the task hand-out (next task, expectation, verdict) compiling was
about a third of the web process's CPU (cProfile, benchmarks/task_handout.py). The few
reads and writes on that path are therefore written here as SQL, built once per database
vendor from the models' metadata (table and column names are never typed by hand); rows come
back as ordinary model instances through the same converters the ORM applies, and writes
prepare values as ``Model.save`` does, so the callers see no difference. Everything else
uses the ORM.

``Joined`` is that translation for a SELECT over several models; ``Statement`` runs such SQL
as a server-side prepared statement on PostgreSQL, so it is parsed and planned once per
connection instead of on every request (planning the task-in-context join took PostgreSQL
0.6 ms, running it 0.1 ms). The statements themselves live next to the code that runs them
(``annotations.permissions``, ``annotations.selectors``, ``services.reviews``).

A note for deployments: SQL ``PREPARE`` statements live in a database session. Behind a
connection pooler in transaction mode (PgBouncer), where a session's next transaction may
run on another server connection, set ``DB_PREPARED_STATEMENTS=0`` (the same SQL then runs
unprepared) or use session mode.
"""

from __future__ import annotations

import itertools
import re
import threading
import weakref
from collections.abc import Callable
from functools import cache
from typing import Any

from django.conf import settings
from django.db import connections
from django.db.models import Field, Model


class Joined:
    """The select list of several models under SQL aliases, and the instances back from a
    row: ``Joined(t=ReviewTask, i=Instance)`` gives ``t."id", t."round_id", ..., i."id",
    ...``; ``unpack(row)`` gives ``{"t": ReviewTask(...), "i": Instance(...)}``, with None for
    a model whose primary key is NULL (an outer join that found nothing). ``alias=(Model,
    ("field", ...))`` loads only those fields (the rest are deferred). Columns the caller
    selects after the models' (``extra``: name -> the model field whose converters apply, or
    None for a plain value) come back in ``unpack(...)["extra"]``.
    """

    def __init__(
        self,
        using: str = "default",
        extra: dict[str, Field | None] | None = None,
        **models: type[Model] | tuple[type[Model], tuple[str, ...]],
    ):
        # Connections are per thread: only the vendor's operations are kept from this one.
        self.using = using
        connection = connections[using]
        self.ops = connection.ops
        self.models: dict[str, type[Model]] = {}
        self.extra = [
            (name, self._converters(connection, f, "x") if f is not None else [])
            for name, f in (extra or {}).items()
        ]
        quote = self.ops.quote_name
        self.parts: list[tuple[str, type[Model], list[str], list[list[tuple]]]] = []
        columns: list[str] = []
        for alias, spec in list(models.items()):
            # A model, or (model, field names) to load only those (and the primary key).
            model, only = spec if isinstance(spec, tuple) else (spec, None)
            self.models[alias] = model
            fields = [
                f
                for f in model._meta.concrete_fields
                if only is None or f.primary_key or f.name in only
            ]
            columns += [f"{alias}.{quote(f.column)}" for f in fields]
            self.parts.append(
                (
                    alias,
                    model,
                    [f.attname for f in fields],
                    [self._converters(connection, f, alias) for f in fields],
                )
            )
        self.columns = ", ".join(columns)

    @staticmethod
    def _converters(connection: Any, field: Any, alias: str) -> list[tuple[Callable, Any]]:
        # What SQLCompiler.get_converters collects for a plain column: the backend's, then
        # the field's own (JSON decoding, SQLite's datetimes, ...).
        col = field.get_col(alias)
        chain = [*connection.ops.get_db_converters(col), *col.get_db_converters(connection)]
        return [(convert, col) for convert in chain]

    def table(self, alias: str) -> str:
        return f"{self.ops.quote_name(self.models[alias]._meta.db_table)} {alias}"

    def column(self, alias: str, field: str) -> str:
        meta = self.models[alias]._meta
        return f"{alias}.{self.ops.quote_name(meta.get_field(field).column)}"

    def unpack(self, row: tuple) -> dict[str, Any]:
        connection = connections[self.using]
        out: dict[str, Any] = {}
        at = 0
        for alias, model, names, converters in self.parts:
            values = list(row[at : at + len(names)])
            at += len(names)
            for n, chain in enumerate(converters):
                for convert, col in chain:
                    values[n] = convert(values[n], col, connection)
            pk_at = names.index(model._meta.pk.attname)
            out[alias] = None if values[pk_at] is None else model.from_db(self.using, names, values)
        extra = {}
        for (name, chain), value in zip(self.extra, row[at:], strict=True):
            for convert, col in chain:
                value = convert(value, col, connection)
            extra[name] = value
        out["extra"] = extra
        return out

    def fetch_one(self, statement: Statement, params: dict[str, Any]) -> dict[str, Any] | None:
        with connections[self.using].cursor() as cursor:
            statement.execute(cursor, params)
            row = cursor.fetchone()
        return None if row is None else self.unpack(row)


_names = itertools.count()
_PARAM = re.compile(r"%\((\w+)\)s")
# Which statements each PostgreSQL session has prepared, by driver connection (a reconnect
# starts with none). Prepared statements outlive a rolled-back transaction.
_prepared: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
_prepared_lock = threading.Lock()


class Statement:
    """SQL with ``%(name)s`` parameters, run many times. On PostgreSQL it is prepared once per
    connection (``PREPARE fs_N AS ...`` with ``$1, $2 ...``) and then run with ``EXECUTE``;
    on other databases it runs as it is."""

    def __init__(self, sql: str) -> None:
        self.sql = sql
        self.name = f"fs_{next(_names)}"
        self.params = list(dict.fromkeys(_PARAM.findall(sql)))
        position = {name: n + 1 for n, name in enumerate(self.params)}
        # The statement with PostgreSQL's $1, $2 ... in the order of ``params``.
        self.positional_sql = _PARAM.sub(lambda m: f"${position[m[1]]}", sql)
        self.prepare_sql = f"PREPARE {self.name} AS {self.positional_sql}"
        placeholders = ", ".join(["%s"] * len(self.params))
        self.execute_sql = (
            f"EXECUTE {self.name}({placeholders})" if self.params else (f"EXECUTE {self.name}")
        )

    def execute(self, cursor: Any, params: dict[str, Any]) -> None:
        """Run on a Django cursor (``connection.cursor()``)."""
        connection = cursor.db
        if connection.vendor != "postgresql" or not settings.DB_PREPARED_STATEMENTS:
            cursor.execute(self.sql, params)
            return
        done = _prepared.get(connection.connection)
        if done is None:
            # Connections belong to one thread each; only this shared map needs the lock.
            with _prepared_lock:
                done = _prepared.setdefault(connection.connection, set())
        if self.name not in done:
            cursor.execute(self.prepare_sql)
            done.add(self.name)
        cursor.execute(self.execute_sql, [params[name] for name in self.params])


class Insert:
    """``INSERT`` of one row of ``model`` into the given fields, as a ``Statement``; values
    are prepared as ``Model.save`` prepares them (``get_db_prep_save``). With ``returning``,
    ``run`` gives that column of the new row (``RETURNING``: PostgreSQL, SQLite 3.35+)."""

    def __init__(
        self,
        model: type[Model],
        fields: tuple[str, ...],
        using: str = "default",
        returning: str | None = None,
    ):
        self.using = using
        self.fields = [model._meta.get_field(name) for name in fields]
        table, col = names(model, using)
        columns = ", ".join(col[f.name] for f in self.fields)
        values = ", ".join(f"%({f.attname})s" for f in self.fields)
        tail = f" RETURNING {col[returning]}" if returning else ""
        self.returning = returning
        self.statement = Statement(f"INSERT INTO {table} ({columns}) VALUES ({values}){tail}")

    def run(self, **values: Any) -> Any:
        connection = connections[self.using]
        params = {f.attname: f.get_db_prep_save(values[f.attname], connection) for f in self.fields}
        with connection.cursor() as cursor:
            self.statement.execute(cursor, params)
            return cursor.fetchone()[0] if self.returning else None


class Update:
    """``UPDATE`` of the given fields of one row by primary key, as a ``Statement``."""

    def __init__(self, model: type[Model], fields: tuple[str, ...], using: str = "default"):
        self.using = using
        self.fields = [model._meta.get_field(name) for name in fields]
        self.pk = model._meta.pk
        table, col = names(model, using)
        sets = ", ".join(f"{col[f.name]} = %({f.attname})s" for f in self.fields)
        self.statement = Statement(f"UPDATE {table} SET {sets} WHERE {col[self.pk.name]} = %(pk)s")

    def run(self, pk: Any, **values: Any) -> int:
        connection = connections[self.using]
        params = {f.attname: f.get_db_prep_save(values[f.attname], connection) for f in self.fields}
        params["pk"] = self.pk.get_db_prep_value(pk, connection)
        with connection.cursor() as cursor:
            self.statement.execute(cursor, params)
            return cursor.rowcount


@cache
def _insert_for(model: type[Model], using: str) -> Insert:
    fields = tuple(f.name for f in model._meta.concrete_fields if not f.primary_key)
    return Insert(model, fields, using, returning=model._meta.pk.name)


@cache
def _update_for(model: type[Model], fields: tuple[str, ...], using: str) -> Update:
    return Update(model, fields, using)


def insert_object(obj: Model, using: str = "default") -> None:
    """``obj.save(force_insert=True)`` as a prepared statement: every concrete field but the
    (automatic) primary key, ``pre_save`` applied (``auto_now`` and the like), the new key
    read back. Sends no model signals: for hot-path models that have no receivers."""
    insert = _insert_for(type(obj), using)
    values = {f.attname: f.pre_save(obj, True) for f in insert.fields}
    obj.pk = insert.run(**values)
    obj._state.adding = False
    obj._state.db = using


def update_object(obj: Model, fields: tuple[str, ...], using: str = "default") -> None:
    """``obj.save(update_fields=fields)`` as a prepared statement (``pre_save`` applied, so
    an ``auto_now`` field among ``fields`` is stamped). No model signals, as above."""
    update = _update_for(type(obj), tuple(fields), using)
    values = {f.attname: f.pre_save(obj, False) for f in update.fields}
    update.run(obj.pk, **values)


_CONSTANT = re.compile(r"[a-z_]+")


def literal(value: str) -> str:
    """A code constant (a choice value such as ``TaskStatus.LEASED``) as an SQL literal.
    Constants go into prepared statements as literals, not parameters: a generic plan
    knows nothing of a parameter's value, and planned ``status = $2`` as a sequential scan
    of every task ("a third of the rows match") where ``status = 'leased'`` uses the
    index (9 ms against 0.1 ms on 100,000 tasks). Only lowercase words are accepted, so
    nothing from a request can get here."""
    if not _CONSTANT.fullmatch(value):
        raise ValueError(f"not a code constant: {value!r}")
    return f"'{value}'"


def names(model: type[Model], using: str = "default") -> tuple[str, dict[str, str]]:
    """The quoted table name of ``model`` and its quoted column names by field name, for
    hand-written SQL."""
    quote = connections[using].ops.quote_name
    meta = model._meta
    return quote(meta.db_table), {f.name: quote(f.column) for f in meta.concrete_fields}
