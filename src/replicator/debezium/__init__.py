"""Debezium's event format: the Kafka Connect schemas and logical types its connectors write,
read into Replicator's values (and, for the Kafka sink, written back)."""
