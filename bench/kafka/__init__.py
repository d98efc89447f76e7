"""`make bench-kafka`: PostgreSQL → Kafka → PostgreSQL, Replicator's watcher and syncer end to end.

Run from the repository root with ``python -m bench.kafka`` (see ``bench/README.md``). The
package starts a throw-away source and target PostgreSQL (``tests.pgcluster.PgCluster``) and
a Kafka broker (``tests.kafkabroker.KafkaBroker``), writes one million single-row INSERT
transactions while every consumer is stopped, and times each consumer alone catching up:
PostgreSQL's own subscription (the baseline), Debezium's PostgreSQL connector (a peer
watcher, PG → Kafka only), and Replicator's watcher and syncer as two ``replicator run``
processes. Then rows arrive at a steady rate and the lag of each target is sampled. Results
go to the terminal and to ``bench/results/kafka-latest.json``.
"""
