"""Inspect a GraphQL document before it leaves the process.

The exporter is read-only by construction: every document is parsed, must hold exactly one
named operation, and may be a mutation only when its single root field is ``apiKeyUser``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from graphql import (
    DocumentNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
    build_schema,
    get_named_type,
    parse,
    print_ast,
)
from graphql.language import FieldNode, Node, SelectionNode, Visitor, visit

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


# -- optional fields -----------------------------------------------------------------------------
# A field is named by its schema coordinate, ``Type.field`` (``Query.seats``, ``Stack.state``).
# The exporter's own documents are read against the project's copy of the schema (the one the
# tests validate every document against), which is all that is needed to know each field's type.


@lru_cache(maxsize=1)
def bundled_schema() -> GraphQLSchema:
    sdl = resources.files("exporter.simulator").joinpath("schema.graphql").read_text()
    return build_schema(sdl)


def _fragments(doc: DocumentNode) -> dict[str, FragmentDefinitionNode]:
    return {d.name.value: d for d in doc.definitions if isinstance(d, FragmentDefinitionNode)}


def _operation(doc: DocumentNode) -> OperationDefinitionNode:
    return next(d for d in doc.definitions if isinstance(d, OperationDefinitionNode))


def _root_type(schema: GraphQLSchema, op: OperationDefinitionNode) -> GraphQLObjectType:
    root = schema.mutation_type if op.operation is OperationType.MUTATION else schema.query_type
    assert root is not None
    return root


@lru_cache(maxsize=512)
def coordinates(document: str) -> dict[tuple[str, ...], str]:
    """Response path (alias or name per level, list indices left out) -> field coordinate.

    Maps the ``path`` of a GraphQL error back to the field that caused it.
    """
    schema = bundled_schema()
    doc = parse(document)
    fragments = _fragments(doc)
    out: dict[tuple[str, ...], str] = {}

    def walk(sel: SelectionSetNode, parent: Any, path: tuple[str, ...]) -> None:
        for s in sel.selections:
            if isinstance(s, FieldNode):
                field = getattr(parent, "fields", {}).get(s.name.value)
                key = (s.alias or s.name).value
                if field is None:
                    continue
                out[(*path, key)] = f"{parent.name}.{s.name.value}"
                if s.selection_set is not None:
                    walk(s.selection_set, get_named_type(field.type), (*path, key))
            elif isinstance(s, InlineFragmentNode):
                cond = s.type_condition.name.value if s.type_condition else None
                walk(s.selection_set, schema.type_map.get(cond) if cond else parent, path)
            elif isinstance(s, FragmentSpreadNode) and s.name.value in fragments:
                frag = fragments[s.name.value]
                walk(frag.selection_set, schema.type_map.get(frag.type_condition.name.value), path)

    op = _operation(doc)
    walk(op.selection_set, _root_type(schema, op), ())
    return out


@lru_cache(maxsize=512)
def coordinate_at(document: str, line: int, column: int) -> str | None:
    """The coordinate of the field written at ``line``:``column`` (a validation error's
    ``locations``), whatever type name the server gave it."""
    schema = bundled_schema()
    doc = parse(document)
    found: list[str] = []

    def walk(sel: SelectionSetNode, parent: Any) -> None:
        for s in sel.selections:
            if isinstance(s, FieldNode):
                field = getattr(parent, "fields", {}).get(s.name.value)
                if s.loc is not None:
                    loc = s.loc.source.get_location(s.loc.start)
                    if (loc.line, loc.column) == (line, column) and field is not None:
                        found.append(f"{parent.name}.{s.name.value}")
                if field is not None and s.selection_set is not None:
                    walk(s.selection_set, get_named_type(field.type))
            elif isinstance(s, InlineFragmentNode):
                cond = s.type_condition.name.value if s.type_condition else None
                walk(s.selection_set, schema.type_map.get(cond) if cond else parent)

    op = _operation(doc)
    walk(op.selection_set, _root_type(schema, op))
    for frag in _fragments(doc).values():
        walk(frag.selection_set, schema.type_map.get(frag.type_condition.name.value))
    return found[0] if found else None


@lru_cache(maxsize=512)
def without_fields(document: str, drop: frozenset[str]) -> str | None:
    """The document without the fields named (by coordinate), or None when nothing is left.

    A selection emptied by the removal goes too (``commit { timestamp }`` without
    ``Commit.timestamp`` drops ``commit``), and so do the fragments and variables no longer
    used, since a GraphQL server rejects a document that declares an unused one.
    """
    if not drop:
        return document
    schema = bundled_schema()
    doc = parse(document, no_location=True)
    fragments = _fragments(doc)
    emptied: set[str] = set()

    def prune(sel: SelectionSetNode, parent: Any) -> SelectionSetNode | None:
        kept: list[SelectionNode] = []
        for s in sel.selections:
            if isinstance(s, FieldNode):
                field = getattr(parent, "fields", {}).get(s.name.value)
                if field is not None:
                    if f"{parent.name}.{s.name.value}" in drop:
                        continue
                    if s.selection_set is not None:
                        inner = prune(s.selection_set, get_named_type(field.type))
                        if inner is None:
                            continue
                        s = _with(s, selection_set=inner)
                kept.append(s)
            elif isinstance(s, InlineFragmentNode):
                cond = s.type_condition.name.value if s.type_condition else None
                inner = prune(s.selection_set, schema.type_map.get(cond) if cond else parent)
                if inner is not None:
                    kept.append(_with(s, selection_set=inner))
            elif not (isinstance(s, FragmentSpreadNode) and s.name.value in emptied):
                kept.append(s)
        return _with(sel, selections=tuple(kept)) if kept else None

    pruned: dict[str, FragmentDefinitionNode] = {}
    for name, frag in fragments.items():
        inner = prune(frag.selection_set, schema.type_map.get(frag.type_condition.name.value))
        if inner is None:
            emptied.add(name)
        else:
            pruned[name] = _with(frag, selection_set=inner)
    # A fragment emptied by the removal empties the selections spreading it: prune again.
    op = _operation(doc)
    body = prune(op.selection_set, _root_type(schema, op))
    if body is None:
        return None
    used_frags: set[str] = set()
    pending = [body]
    while pending:
        for node in _nodes(pending.pop()):
            if isinstance(node, FragmentSpreadNode) and node.name.value not in used_frags:
                used_frags.add(node.name.value)
                pending.append(pruned[node.name.value].selection_set)
    kept_frags = [pruned[name] for name in pruned if name in used_frags]
    used_vars = {
        n.name.value
        for root in (body, *(f.selection_set for f in kept_frags))
        for n in _nodes(root)
        if isinstance(n, VariableNode)
    }
    variables = tuple(
        v for v in op.variable_definitions or () if v.variable.name.value in used_vars
    )
    new_op = _with(op, selection_set=body, variable_definitions=variables)
    return print_ast(_with(doc, definitions=(new_op, *kept_frags)))


def _with(node: Any, **changes: Any) -> Any:
    """A copy of an AST node with some attributes replaced (graphql-core nodes are frozen)."""
    return type(node)(**{k: getattr(node, k) for k in node.keys if k not in changes}, **changes)


def _nodes(root: Node) -> list[Node]:
    """Every node under ``root``, in document order."""
    out: list[Node] = []

    class Collect(Visitor):
        def enter(self, node: Node, *_: Any) -> None:
            out.append(node)

    visit(root, Collect())
    return out
