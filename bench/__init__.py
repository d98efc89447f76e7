"""`make bench`: Replicator side by side with PostgreSQL's native logical replication.

Run from the repository root with ``python -m bench`` (see ``bench/README.md``). The package
starts its own throw-away clusters (``tests.pgcluster.PgCluster``), loads a pgbench database,
and times three phases for both consumers on the same machine in one run: the initial copy,
the catch-up after a timed pgbench run, and the catch-up after one transaction that updates
every ``pgbench_accounts`` row. Results go to the terminal and to ``bench/results/latest.json``.
"""
