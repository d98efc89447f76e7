"""Validation rules: checks on the new row of streamed inserts and updates, from the config.

A change that breaks a rule is not applied: it goes to the dead-letter queue with the rule
and what was wrong, and its key is held like any dead-lettered change's. Rules are compiled
per table once, so a table without rules costs one dictionary lookup per change.
Unchanged (TOASTed) values are not checked: the source did not send them, and the target
already holds them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from replicator.config import ValidationRule
from replicator.events import UNCHANGED, ChangeEvent, Op, TableId

# (column, rule name, check) where check returns a complaint or None.
_Check = tuple[str, str, Callable[[Any], str | None]]


class Validator:
    """The rules of one pipeline, compiled per table."""

    def __init__(self, rules: list[ValidationRule]) -> None:
        self._rules = rules
        self._by_table: dict[TableId, list[_Check]] = {}

    def __bool__(self) -> bool:
        return bool(self._rules)

    def problem(self, event: ChangeEvent) -> tuple[str, str] | None:
        """The rule ``event`` breaks and what is wrong, or None."""
        if event.op is not Op.INSERT and event.op is not Op.UPDATE and event.op is not Op.READ:
            return None
        checks = self._by_table.get(event.table)
        if checks is None:
            checks = self._by_table[event.table] = self._compile(event.table)
        if not checks:
            return None
        row = event.after or {}
        for column, rule, check in checks:
            value = row.get(column)
            if value is UNCHANGED:
                continue
            complaint = check(value)
            if complaint is not None:
                return f"{event.table}.{column} {rule}", f"{column} {complaint}"
        return None

    def _compile(self, table: TableId) -> list[_Check]:
        checks: list[_Check] = []
        for rule in self._rules:
            if not any(table.matches(p) for p in rule.tables):
                continue
            for column in rule.required:
                checks.append((column, "required", _required))
            for column, limit in rule.max_length.items():
                checks.append((column, f"max_length {limit}", _max_length(limit)))
            for column, bounds in rule.ranges.items():
                lo, hi = bounds.min, bounds.max
                name = f"range [{'' if lo is None else lo}, {'' if hi is None else hi}]"
                checks.append((column, name, _in_range(lo, hi)))
            for column, pattern in rule.patterns.items():
                checks.append((column, f"pattern {pattern!r}", _matches(re.compile(pattern))))
        return checks


def _required(value: Any) -> str | None:
    return "is NULL but required" if value is None else None


def _max_length(limit: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value is None or not isinstance(value, str | bytes | bytearray | list):
            return None
        size = len(value)
        return f"is {size} long, over max_length {limit}" if size > limit else None

    return check


def _in_range(lo: float | None, hi: float | None) -> Callable[[Any], str | None]:
    low = Decimal(str(lo)) if lo is not None else None
    high = Decimal(str(hi)) if hi is not None else None

    def check(value: Any) -> str | None:
        if value is None or isinstance(value, bool):
            return None
        if not isinstance(value, int | float | Decimal):
            return f"is not a number ({type(value).__name__}), so its range cannot be checked"
        number = Decimal(str(value))
        if number.is_nan():
            return "is NaN, outside any range"
        if (low is not None and number < low) or (high is not None and number > high):
            return f"is {value}, outside the allowed range"
        return None

    return check


def _matches(pattern: re.Pattern[str]) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value is None:
            return None
        text = value if isinstance(value, str) else str(value)
        return None if pattern.fullmatch(text) else "does not match the pattern"

    return check
