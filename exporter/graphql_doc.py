"""Inspect a GraphQL document before it leaves the process.

The exporter is read-only by construction: every document is parsed, must hold exactly one
named operation, and may be a mutation only when its single root field is ``apiKeyUser``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from graphql import OperationDefinitionNode, OperationType, parse
from graphql.language import FieldNode

from exporter.errors import ReadOnlyViolation

TOKEN_EXCHANGE_FIELD = "apiKeyUser"


@dataclass(frozen=True)
class Operation:
    name: str
    is_mutation: bool


@lru_cache(maxsize=256)
def inspect(document: str) -> Operation:
    ops = [d for d in parse(document).definitions if isinstance(d, OperationDefinitionNode)]
    if len(ops) != 1 or ops[0].name is None:
        raise ReadOnlyViolation("a document must hold exactly one named operation")
    op = ops[0]
    name = op.name.value if op.name else ""
    if op.operation is OperationType.QUERY:
        return Operation(name, is_mutation=False)
    if op.operation is OperationType.MUTATION:
        fields = [s.name.value for s in op.selection_set.selections if isinstance(s, FieldNode)]
        if fields == [TOKEN_EXCHANGE_FIELD] and len(op.selection_set.selections) == 1:
            return Operation(name, is_mutation=True)
        raise ReadOnlyViolation(f"refusing to send mutation {name!r}: the exporter is read-only")
    raise ReadOnlyViolation(f"refusing to send {op.operation.value} {name!r}")
