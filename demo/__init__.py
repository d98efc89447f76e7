"""``make demo``: Replicator copying a small web shop from one PostgreSQL server to another.

The demo starts two throw-away PostgreSQL clusters (``tests.pgcluster.PgCluster``), loads a
sample shop (customers, products, orders, order lines) into the source, starts
``replicator run`` on it, keeps the shop busy with live traffic while the initial snapshot and
the change stream run, waits until the target has caught up, and then compares every row of
every table on both sides. It exits 0 only when the target is an exact copy.

Run it from the repository root: ``make demo`` (or ``.venv/bin/python -m demo --help``).
"""
