"""Every GraphQL document the exporter sends is a valid query against the schema copy."""

from __future__ import annotations

from pathlib import Path

import pytest
from graphql import build_schema, parse, validate

from exporter.areas import AREAS
from exporter.client import EXCHANGE_DOCUMENT
from exporter.errors import ReadOnlyViolation
from exporter.graphql_doc import inspect

SCHEMA = build_schema((Path(__file__).parents[1] / "exporter/simulator/schema.graphql").read_text())
DOCUMENTS = [(name, doc) for spec in AREAS.values() for name, doc in spec.documents.items()]


@pytest.mark.parametrize(("name", "document"), DOCUMENTS, ids=[n for n, _ in DOCUMENTS])
def test_area_document_validates_against_schema(name: str, document: str) -> None:
    errors = validate(SCHEMA, parse(document))
    assert not errors, [e.message for e in errors]
    op = inspect(document)
    assert op.name == name and not op.is_mutation


def test_token_exchange_document_validates() -> None:
    assert not validate(SCHEMA, parse(EXCHANGE_DOCUMENT))
    assert inspect(EXCHANGE_DOCUMENT).is_mutation


def test_schema_copy_matches_shared_reference() -> None:
    shared = Path(__file__).parents[2] / "shared/spacelift/schema.graphql"
    if not shared.exists():
        pytest.skip("../shared is not beside this checkout")
    copy = Path(__file__).parents[1] / "exporter/simulator/schema.graphql"
    assert copy.read_text() == shared.read_text()


@pytest.mark.parametrize(
    "document",
    [
        'mutation Lock { stackLock(id: "x") { id } }',
        'mutation Sneaky { apiKeyUser(id: "a", secret: "b") { jwt } stackLock(id: "x") { id } }',
        "query { viewer { id } }",  # unnamed: every document must say what it is
        "query A { viewer { id } } query B { viewer { id } }",
    ],
)
def test_anything_but_queries_and_the_exchange_is_refused(document: str) -> None:
    with pytest.raises(ReadOnlyViolation):
        inspect(document)


def test_readme_reference_tables_are_current() -> None:
    from exporter import docgen

    assert docgen.main(["--check"]) == 0, "run: python -m exporter.docgen"
