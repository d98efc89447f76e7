"""`make bench-mysql`: Replicator side by side with pg_chameleon, MariaDB → PostgreSQL.

Run from the repository root with ``python -m bench.mysql`` (see ``bench/README.md``). The
package starts a throw-away MariaDB (``tests.mariadb.MariaDbServer``) and one PostgreSQL
cluster with a database per consumer (``tests.pgcluster.PgCluster``), prepares a sysbench
database, and times two phases for both consumers on the same machine in one run: the
initial copy, and the catch-up after a timed sysbench run during which both were stopped.
After each phase both targets must equal the source. Results go to the terminal and to
``bench/results/mysql-latest.json``.
"""
