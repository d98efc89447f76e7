"""A seeded random workload for a MariaDB source, for crash and fault tests.

The schema spans two databases (the DSN's and ``<db>_x``) and covers what the MySQL source
promises to decode: an INT AUTO_INCREMENT key, a composite key, a BIGINT UNSIGNED key near
2^64, a table without any key (duplicates allowed), wide rows with TEXT/BLOB, JSON, DECIMAL,
DATETIME(6), TIMESTAMP(6), ENUM/SET, a latin1 column, BIT, CHAR and TIME. Every row carries
``v``, incremented on each update, so a regression (an old image applied last) would show.

Transactions mix inserts, multi-row updates, primary-key changes (``UPDATE … SET id = …``),
deletes, ``INSERT … ON DUPLICATE KEY UPDATE``, explicit ROLLBACKs and multi-table (and
multi-database) writes; now and then a small table is truncated, and now and then one big
transaction writes a few thousand rows, so that it spans several ROWS events and more than
one hand-over of the reader. The workload session runs at time zone +02:00, so TIMESTAMP
values are converted on the way in, as in production.

A lost connection (the server killed under it) is counted in ``interrupted`` and the
workload reconnects: the comparison is with the source as it ends up, not with a model.
"""

from __future__ import annotations

import random
import threading
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import unquote, urlsplit

import pymysql

from tests.mariadb import connect

MAIN_TABLES = ("accounts", "order_lines", "big_ids", "audit_log", "sessions", "bulk", "bulk_log")
OTHER_TABLES = ("docs",)

_MAIN_SCHEMA = [
    """CREATE TABLE accounts (
        id INT AUTO_INCREMENT PRIMARY KEY,
        owner VARCHAR(80) NOT NULL,
        balance DECIMAL(14, 2),
        v BIGINT NOT NULL DEFAULT 0,
        active TINYINT(1),
        ratio DOUBLE,
        meta JSON,
        born DATE,
        seen DATETIME(6),
        touched TIMESTAMP(6) NULL DEFAULT NULL,
        mood ENUM('sad', 'ok', 'happy', 'très content'),
        tags SET('red', 'green', 'blue', 'x y'),
        legacy VARCHAR(40) CHARACTER SET latin1,
        flags BIT(10),
        code CHAR(4),
        span TIME(3),
        bio TEXT,
        photo BLOB
    ) ENGINE = InnoDB""",
    """CREATE TABLE order_lines (
        order_id INT NOT NULL,
        line INT NOT NULL,
        sku VARCHAR(20) NOT NULL,
        price DECIMAL(10, 3),
        v BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (order_id, line)
    ) ENGINE = InnoDB""",
    """CREATE TABLE big_ids (
        id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
        label VARCHAR(30),
        amount DECIMAL(30, 10),
        v BIGINT NOT NULL DEFAULT 0
    ) ENGINE = InnoDB""",
    """CREATE TABLE audit_log (
        who VARCHAR(10),
        what VARCHAR(40),
        n INT,
        v INT NOT NULL DEFAULT 0
    ) ENGINE = InnoDB""",
    """CREATE TABLE sessions (
        id INT PRIMARY KEY,
        token CHAR(16) NOT NULL,
        v INT NOT NULL DEFAULT 0
    ) ENGINE = InnoDB""",
    """CREATE TABLE bulk (
        id INT PRIMARY KEY,
        n INT NOT NULL,
        at DATETIME(6) NOT NULL,
        v INT NOT NULL DEFAULT 0
    ) ENGINE = InnoDB""",
    """CREATE TABLE bulk_log (
        who VARCHAR(10),
        n INT,
        v INT NOT NULL DEFAULT 0
    ) ENGINE = InnoDB""",
]
_OTHER_SCHEMA = [
    """CREATE TABLE docs (
        id INT AUTO_INCREMENT PRIMARY KEY,
        title VARCHAR(100) NOT NULL,
        doc JSON,
        body MEDIUMTEXT,
        data LONGBLOB,
        weight DECIMAL(30, 10),
        v BIGINT NOT NULL DEFAULT 0
    ) ENGINE = InnoDB""",
]

_BIG = 2**64 - 1
_DOUBLES = [0.0, -0.0, 1.5, -2.25, 1e300, -1e-300, 3.141592653589793, 0.1, None]
_DECIMALS = [Decimal("0.00"), Decimal("-12345678.99"), Decimal("9999999999.99"), None]
_DATES = [date(1000, 1, 1), date(2024, 2, 29), date(9999, 12, 31), None]
_DATETIMES = [
    datetime(1000, 1, 1, 0, 0, 0, 1),
    datetime(2024, 2, 29, 12, 34, 56, 789012),
    datetime(9999, 12, 31, 23, 59, 59, 999999),
    None,
]
_MOODS = ["sad", "ok", "happy", "très content", None]
_TAGS = ["", "red", "green,blue", "red,green,blue,x y", "x y", None]
_LATIN1 = ["café ß ÿ", "€ and „quotes“", "plain", "", None]
_CODES = ["ab", "abcd", "", "a  b", None]
_JSONS = [
    '{"k": [1, 2.5, null], "s": "tab\\t and \\"quote\\"", "ü": true}',
    '{"nested": {"a": {"b": [{}, []]}}, "n": -7}',
    "[1, 2, 3]",
    '"just a string"',
    "null",
    '{"emoji": "😀", "big": 12345678901234}',
    None,
]


def database_of(dsn: str) -> str:
    """The database a ``mysql://…/db`` DSN names."""
    return unquote(urlsplit(dsn).path.lstrip("/"))


def other_database(dsn: str) -> str:
    """The second database of the workload: ``<db>_x``."""
    return database_of(dsn) + "_x"


def table_names(dsn: str) -> list[str]:
    """Every workload table as ``database.table``."""
    main, other = database_of(dsn), other_database(dsn)
    return [f"{main}.{t}" for t in MAIN_TABLES] + [f"{other}.{t}" for t in OTHER_TABLES]


def table_patterns(dsn: str) -> list[str]:
    """The ``source.tables`` patterns that capture both databases."""
    return [f"{database_of(dsn)}.*", f"{other_database(dsn)}.*"]


def _timestamp(rnd: random.Random) -> datetime | None:
    # Inside TIMESTAMP's range in any session time zone (1970-01-01 00:00:01 UTC onwards).
    if rnd.random() < 0.15:
        return None
    moment = datetime(1971, 1, 1) + timedelta(seconds=rnd.randint(0, 2_000_000_000))
    return moment.replace(microsecond=rnd.choice([0, 1, 500000, 999999, rnd.randint(0, 999999)]))


def _text(rnd: random.Random, stem: str, longest: int) -> str:
    # Tabs, newlines and backslashes need escaping in COPY text; emoji need utf8mb4.
    piece = f"{stem} ünïcødé \\ back\tslash\nline 'q' \"dq\" 😀 "
    return piece * rnd.randint(1, max(1, longest // len(piece)))


def _blob(rnd: random.Random, longest: int) -> bytes:
    size = rnd.randint(0, longest)
    return bytes(rnd.getrandbits(8) for _ in range(size)) + b"\x00\t\\\n\r"


class Workload:
    """Runs random transactions against the source until stopped; seeded for replay."""

    def __init__(self, dsn: str, seed: int, *, big_every: int = 150, pause_s: float = 0.01) -> None:
        self.dsn = dsn
        self.seed = seed
        self.rnd = random.Random(seed)
        self.big_every = big_every
        self.pause_s = pause_s
        self.other = other_database(dsn)
        self.transactions = 0
        self.rollbacks = 0
        self.big_transactions = 0
        self.truncates = 0
        self.interrupted = 0
        self.error: BaseException | None = None
        self._last_account = 1
        self._last_doc = 1
        self._next_order = 1
        self._bulk_rows = 0
        self._next_bulk = 1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- schema -----------------------------------------------------------------------------

    @staticmethod
    def create_schema(dsn: str) -> None:
        """Create the tables, and the second database ``<db>_x`` with its own."""
        with connect(dsn) as conn, conn.cursor() as cur:
            for statement in _MAIN_SCHEMA:
                cur.execute(statement)
            cur.execute(f"CREATE DATABASE `{other_database(dsn)}`")
            cur.execute(f"USE `{other_database(dsn)}`")
            for statement in _OTHER_SCHEMA:
                cur.execute(statement)

    @staticmethod
    def drop_other_database(dsn: str) -> None:
        """Drop ``<db>_x`` (the fixture drops only the DSN's database)."""
        with connect(dsn) as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{other_database(dsn)}`")

    def populate_bulk(self, rows: int, log_rows: int) -> None:
        """Fill ``bulk`` (keyed, chunked by the snapshot) and ``bulk_log`` (keyless)."""
        with connect(self.dsn) as conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO bulk (id, n, at) SELECT seq, seq % 97,"
                " '2024-01-01' + INTERVAL seq SECOND FROM seq_1_to_" + str(rows)
            )
            cur.execute(
                "INSERT INTO bulk_log (who, n) SELECT CONCAT('w', seq % 13), seq % 5"
                " FROM seq_1_to_" + str(log_rows)
            )
            cur.execute("ANALYZE TABLE bulk, bulk_log")
        self._bulk_rows = rows
        self._next_bulk = rows + 1

    # --- running ----------------------------------------------------------------------------

    def start(self) -> None:
        """Run transactions in a background thread at a steady rate."""
        self._thread = threading.Thread(target=self._loop, name="mysql-workload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop and wait; re-raise a failure of the workload itself."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)
            assert not self._thread.is_alive(), "the workload did not stop"
        if self.error is not None:
            raise self.error

    def connect(self) -> Any:
        """A workload session: not autocommit, in time zone +02:00."""
        conn = connect(self.dsn, autocommit=False, init_command="SET time_zone = '+02:00'")
        self._last_account = max(self._last_account, _max_id(conn, "accounts"))
        self._last_doc = max(self._last_doc, _max_id(conn, f"`{self.other}`.docs"))
        return conn

    def _loop(self) -> None:
        try:
            conn = None
            while not self._stop.is_set():
                try:
                    if conn is None:
                        conn = self.connect()
                    self.run_transaction(conn)
                except (pymysql.err.OperationalError, pymysql.err.InterfaceError) as exc:
                    if not _lost(exc):
                        raise
                    # The server went away (a fault test): whether the transaction in
                    # flight committed is the server's to say; carry on once it is back.
                    self.interrupted += 1
                    if conn is not None:
                        _close_quietly(conn)
                    conn = None
                    self._stop.wait(0.5)
                    continue
                self._stop.wait(self.rnd.random() * self.pause_s)
            if conn is not None:
                conn.close()
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc

    def run_transaction(self, conn: Any) -> None:
        """One random transaction of 1-6 statements (about 5% roll back), now and then a
        TRUNCATE of a small table, and every ``big_every`` transactions a big one."""
        rnd = self.rnd
        if self.big_every and self.transactions and self.transactions % self.big_every == 0:
            self._big_transaction(conn)
            return
        if rnd.random() < 0.01:
            with conn.cursor() as cur:
                cur.execute("TRUNCATE TABLE sessions")  # DDL: commits on its own
            self.truncates += 1
            self.transactions += 1
            return
        conn.begin()
        try:
            with conn.cursor() as cur:
                for _ in range(rnd.randint(1, 6)):
                    self._statement(cur)
            if rnd.random() < 0.05:
                conn.rollback()
                self.rollbacks += 1
                return
            conn.commit()
        except BaseException:
            _rollback_quietly(conn)
            raise
        self.transactions += 1

    # --- statements -------------------------------------------------------------------------

    def _account_row(self) -> tuple[Any, ...]:
        rnd = self.rnd
        n = rnd.randint(1, 10**6)
        return (
            f"owner {n} ünïcødé\t'q' \\ 😀",
            rnd.choice(_DECIMALS),
            rnd.choice([0, 1, None]),
            rnd.choice(_DOUBLES),
            rnd.choice(_JSONS),
            rnd.choice(_DATES),
            rnd.choice(_DATETIMES),
            _timestamp(rnd),
            rnd.choice(_MOODS),
            rnd.choice(_TAGS),
            rnd.choice(_LATIN1),
            rnd.choice([0, 1, 0b1010101010, 1023, None]),
            rnd.choice(_CODES),
            rnd.choice(["838:59:59", "-12:30:00.5", "00:00:00", "100:00:00.001", None]),
            None if rnd.random() < 0.2 else _text(rnd, f"bio{n}", rnd.choice([50, 500, 5000])),
            None if rnd.random() < 0.3 else _blob(rnd, rnd.choice([10, 3000])),
        )

    def _statement(self, cur: Any) -> None:
        rnd = self.rnd
        choice = rnd.random()
        hi = self._last_account
        if choice < 0.18:
            rows = [self._account_row() for _ in range(rnd.randint(1, 8))]
            cur.executemany(
                "INSERT INTO accounts (owner, balance, active, ratio, meta, born, seen, touched,"
                " mood, tags, legacy, flags, code, span, bio, photo)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                rows,
            )
            self._last_account = max(self._last_account, cur.lastrowid + len(rows))
        elif choice < 0.30:
            lo = rnd.randint(1, hi)
            cur.execute(
                "UPDATE accounts SET v = v + 1, balance = COALESCE(balance, 0) + 1.25,"
                " seen = %s, touched = %s, tags = %s, active = NOT COALESCE(active, 0),"
                " flags = COALESCE(flags, 0) ^ 5 WHERE id BETWEEN %s AND %s",
                (rnd.choice(_DATETIMES), _timestamp(rnd), rnd.choice(_TAGS), lo, lo + 20),
            )
        elif choice < 0.34:
            cur.execute(
                "UPDATE accounts SET v = v + 1, bio = %s, photo = %s, meta = %s WHERE id = %s",
                (
                    _text(rnd, "rewritten", 4000),
                    _blob(rnd, 2000),
                    rnd.choice(_JSONS),
                    rnd.randint(1, hi),
                ),
            )
        elif choice < 0.38:
            # A primary-key change: negative ids are never handed out by AUTO_INCREMENT.
            cur.execute(
                "UPDATE accounts SET id = -id, v = v + 1 WHERE id = %s", (rnd.randint(1, hi),)
            )
        elif choice < 0.41:
            lo = rnd.randint(1, hi)
            cur.execute("DELETE FROM accounts WHERE id BETWEEN %s AND %s", (lo, lo + 2))
        elif choice < 0.42:
            cur.execute("DELETE FROM accounts WHERE id = %s", (-rnd.randint(1, hi),))
        elif choice < 0.50:
            order = rnd.randint(1, 300)
            cur.executemany(
                "INSERT INTO order_lines (order_id, line, sku, price) VALUES (%s, %s, %s, %s)"
                " ON DUPLICATE KEY UPDATE v = v + 1, price = COALESCE(price, 0) + 1",
                [
                    (order, line, f"sku-{line}", Decimal(line) * Decimal("1.125"))
                    for line in range(1, rnd.randint(2, 6))
                ],
            )
        elif choice < 0.54:
            # Composite key change; IGNORE skips lines whose new key is taken.
            cur.execute(
                "UPDATE IGNORE order_lines SET line = line + 100, v = v + 1"
                " WHERE order_id = %s AND line < 100",
                (rnd.randint(1, 300),),
            )
        elif choice < 0.56:
            cur.execute("DELETE FROM order_lines WHERE order_id = %s", (rnd.randint(1, 300),))
        elif choice < 0.62:
            rows = []
            for _ in range(rnd.randint(1, 4)):
                key = rnd.choice([rnd.randint(1, 1000), _BIG - rnd.randint(0, 1000)])
                rows.append((key, f"id {key}", Decimal(rnd.randint(-(10**12), 10**12)) / 10**7))
            cur.executemany(
                "INSERT INTO big_ids (id, label, amount) VALUES (%s, %s, %s)"
                " ON DUPLICATE KEY UPDATE v = v + 1, amount = VALUES(amount)",
                rows,
            )
        elif choice < 0.65:
            old = rnd.choice([rnd.randint(1, 1000), _BIG - rnd.randint(0, 1000)])
            new = rnd.choice([rnd.randint(1001, 2000), _BIG - rnd.randint(1001, 2000)])
            cur.execute("UPDATE IGNORE big_ids SET id = %s, v = v + 1 WHERE id = %s", (new, old))
        elif choice < 0.67:
            lo = rnd.choice([rnd.randint(1, 2000), _BIG - rnd.randint(0, 2000)])
            cur.execute("DELETE FROM big_ids WHERE id BETWEEN %s AND %s", (lo, lo + 30))
        elif choice < 0.73:
            who = rnd.choice(["alice", "bob", "carol"])
            cur.executemany(
                "INSERT INTO audit_log (who, what, n) VALUES (%s, %s, %s)",
                [(who, "did a thing", rnd.randint(1, 3))] * rnd.randint(1, 3),  # duplicates
            )
        elif choice < 0.76:
            cur.execute(
                "UPDATE audit_log SET n = n + 1, v = v + 1 WHERE who = %s LIMIT 1",
                (rnd.choice(["alice", "bob", "carol"]),),
            )
        elif choice < 0.78:
            cur.execute("DELETE FROM audit_log WHERE n = %s LIMIT 1", (rnd.randint(1, 4),))
        elif choice < 0.82:
            key = rnd.randint(1, 50)
            cur.execute(
                "INSERT INTO sessions (id, token) VALUES (%s, %s)"
                " ON DUPLICATE KEY UPDATE v = v + 1, token = VALUES(token)",
                (key, f"{rnd.getrandbits(48):012x}"),
            )
        elif choice < 0.88:
            self._docs(cur)
        elif choice < 0.96:
            self._bulk(cur)
        else:
            # One statement per database and table kind, in one transaction.
            cur.execute(
                "UPDATE accounts SET v = v + 1, balance = COALESCE(balance, 0) - 1 WHERE id = %s",
                (rnd.randint(1, hi),),
            )
            cur.execute(
                f"UPDATE `{self.other}`.docs SET v = v + 1, weight = COALESCE(weight, 0) + 1"
                " WHERE id = %s",
                (rnd.randint(1, self._last_doc),),
            )
            cur.execute("INSERT INTO audit_log (who, what, n) VALUES ('multi', 'two dbs', 1)")

    def _docs(self, cur: Any) -> None:
        rnd = self.rnd
        docs = f"`{self.other}`.docs"
        if rnd.random() < 0.6:
            cur.execute(
                f"INSERT INTO {docs} (title, doc, body, data, weight) VALUES (%s, %s, %s, %s, %s)",
                (
                    f"doc {rnd.randint(1, 999)}",
                    rnd.choice(_JSONS),
                    _text(rnd, "body", rnd.choice([100, 10000])),
                    _blob(rnd, rnd.choice([100, 5000])),
                    Decimal(rnd.randint(-(10**15), 10**15)) / 10**10,
                ),
            )
            self._last_doc = max(self._last_doc, cur.lastrowid)
        elif rnd.random() < 0.7:
            cur.execute(
                f"UPDATE {docs} SET v = v + 1, doc = %s WHERE id = %s",
                (rnd.choice(_JSONS), rnd.randint(1, self._last_doc)),
            )
        else:
            cur.execute(f"DELETE FROM {docs} WHERE id = %s", (rnd.randint(1, self._last_doc),))

    def _bulk(self, cur: Any) -> None:
        rnd = self.rnd
        top = max(self._next_bulk, 2)
        choice = rnd.random()
        if choice < 0.4:
            lo = rnd.randint(1, top)
            cur.execute(
                "UPDATE bulk SET v = v + 1, n = n + 1, at = %s WHERE id BETWEEN %s AND %s",
                (rnd.choice(_DATETIMES[:3]), lo, lo + rnd.randint(0, 5)),
            )
        elif choice < 0.55:
            cur.execute("UPDATE bulk SET id = -id, v = v + 1 WHERE id = %s", (rnd.randint(1, top),))
        elif choice < 0.7:
            cur.execute("DELETE FROM bulk WHERE id = %s", (rnd.randint(1, top),))
        elif choice < 0.85:
            cur.execute("INSERT INTO bulk (id, n, at) VALUES (%s, 1, NOW(6))", (self._next_bulk,))
            self._next_bulk += 1
        elif choice < 0.93:
            cur.execute(
                "INSERT INTO bulk_log (who, n) VALUES (%s, %s)",
                (f"w{rnd.randint(0, 12)}", rnd.randint(0, 4)),
            )
        else:
            cur.execute("DELETE FROM bulk_log WHERE who = %s LIMIT 1", (f"w{rnd.randint(0, 12)}",))

    def _big_transaction(self, conn: Any) -> None:
        """A few thousand rows in one transaction: many ROWS events, several hand-overs."""
        rnd = self.rnd
        order = 100_000 + self._next_order
        self._next_order += 1
        lines = rnd.randint(2000, 4000)
        conn.begin()
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "INSERT INTO order_lines (order_id, line, sku, price)"
                    f" SELECT %s, seq, CONCAT('big-', seq), seq * 0.5 FROM seq_1_to_{lines}",
                    (order,),
                )
                cur.execute(
                    "UPDATE order_lines SET v = v + 1, price = price + 1 WHERE order_id = %s",
                    (order,),
                )
                lo = self.rnd.randint(1, max(1, self._next_bulk - 2000))
                cur.execute("UPDATE bulk SET v = v + 1 WHERE id BETWEEN %s AND %s", (lo, lo + 2000))
                if rnd.random() < 0.5:
                    cur.execute(
                        "DELETE FROM order_lines WHERE order_id = %s AND line %% 3 = 0", (order,)
                    )
            conn.commit()
        except BaseException:
            _rollback_quietly(conn)
            raise
        self.big_transactions += 1
        self.transactions += 1


def _max_id(conn: Any, table: str) -> int:
    with conn.cursor() as cur:
        cur.execute(f"SELECT COALESCE(MAX(id), 1) FROM {table}")
        value = int(cur.fetchone()[0])
    conn.commit()
    return max(1, value)


def _lost(exc: pymysql.err.Error) -> bool:
    # CR_CONN_HOST_ERROR, CR_SERVER_GONE_ERROR, CR_SERVER_LOST, ER_SERVER_SHUTDOWN,
    # ER_CONNECTION_KILLED, "can't connect" while the server restarts, and PyMySQL's own
    # InterfaceError on a connection it already saw break.
    if isinstance(exc, pymysql.err.InterfaceError):
        return True
    return bool(exc.args) and exc.args[0] in (2003, 2006, 2013, 1053, 1927, 2002)


def _rollback_quietly(conn: Any) -> None:
    try:
        conn.rollback()
    except pymysql.err.Error:
        pass


def _close_quietly(conn: Any) -> None:
    try:
        conn.close()
    except pymysql.err.Error:
        pass
