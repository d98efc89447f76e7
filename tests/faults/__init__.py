"""Fault-injection tests: real servers, the CLI, failpoints, signals, disks and networks."""
