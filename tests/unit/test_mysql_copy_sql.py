"""The snapshot SELECT covers every mapped type and quotes what it names.

What the SELECT writes is proven value by value against a real server in
``tests/integration/test_mysql_types.py``; these tests pin the parts a server run would
only show as a syntax error.
"""

from __future__ import annotations

from replicator.events import TableId
from replicator.sources.mysql import copy_sql
from replicator.sources.mysql.columns import MyColumn, TypeOptions, pg_type
from tests.unit.test_mysql_columns import MAPPING


def test_every_mapped_type_has_a_copy_expression() -> None:
    """Each type the type table maps can also be copied by the snapshot, under both
    zero-date and boolean settings."""
    table = TableId("db", "t")
    for options in (TypeOptions(), TypeOptions(zero_dates_null=False, tinyint1_as_boolean=False)):
        for column, _ in MAPPING:
            pg_type(column, options)
            assert copy_sql.field(table, column, options).startswith("IF(`c` IS NULL")


def quoted_parts(statement: str) -> tuple[list[str], list[str]]:
    """The identifiers and string literals of MySQL SQL, unescaped; fails if one of them
    is left open."""
    identifiers: list[str] = []
    literals: list[str] = []
    i = 0
    while i < len(statement):
        char = statement[i]
        if char == "`":
            end = i + 1
            name = ""
            while True:
                stop = statement.index("`", end)
                name += statement[end:stop]
                if statement[stop + 1 : stop + 2] != "`":
                    break
                name += "`"
                end = stop + 2
            identifiers.append(name)
            i = stop + 1
        elif char == "'":
            i += 1
            text = ""
            while statement[i] != "'" or statement[i + 1 : i + 2] == "'":
                if statement[i] == "\\":
                    text += {"n": "\n", "t": "\t", "r": "\r"}.get(
                        statement[i + 1], statement[i + 1]
                    )
                    i += 2
                elif statement[i] == "'":
                    text += "'"
                    i += 2
                else:
                    text += statement[i]
                    i += 1
            literals.append(text)
            i += 1
        else:
            i += 1
    return identifiers, literals


def test_names_are_quoted_and_messages_escaped() -> None:
    """Backticks in names are doubled, and quotes and backslashes of names inside message
    literals are escaped, so any name makes valid SQL with the names intact."""
    table = TableId("my`db", "it's")
    column = MyColumn(name="a`b'c\\", data_type="date")
    text = MyColumn(name="t`'\\", data_type="text", charset="utf8mb4")
    statement = copy_sql.select(table, (column, text), TypeOptions(zero_dates_null=False))
    identifiers, literals = quoted_parts(statement)
    assert set(identifiers) == {"my`db", "it's", "a`b'c\\", "t`'\\"}
    assert statement.endswith("FROM `my``db`.`it's`")
    assert "column a`b'c\\ of my`db.it's holds the zero date " in literals
    assert any(t.startswith("column t`'\\ of my`db.it's holds a value too large") for t in literals)


def test_the_where_clause_restricts_the_rows() -> None:
    """A chunk's condition is appended as the SELECT's WHERE clause."""
    column = MyColumn(name="id", data_type="int")
    statement = copy_sql.select(TableId("db", "t"), (column,), TypeOptions(), "`id` >= 10")
    assert statement.endswith("FROM `db`.`t` WHERE `id` >= 10")
