"""A YAML loader for files a person edits: strict, bounded, and clear about what is wrong.

``yaml.safe_load`` builds no arbitrary objects, but it still accepts duplicate keys (the last
one silently wins), expands aliases without limit (a 1 KB "billion laughs" file becomes
gigabytes), recurses once per nesting level (a deep file raises ``RecursionError``) and lets
``ValueError`` escape from a 5,000-digit integer. ``load`` refuses all of these with a
``YamlError`` that names the key (``accounts[0].name``) and the line, so callers turn it into
"exit 2 naming the key" instead of a traceback.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_BYTES = 1 << 20  # a configuration file, not a data set
MAX_DEPTH = 32  # nesting of mappings and sequences, after aliases are expanded
MAX_NODES = 100_000  # values in the document, after aliases are expanded

_MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlError(ValueError):
    """The document is refused. ``path`` names the key at fault ("" for the whole file)."""

    def __init__(self, problem: str, path: str = "", line: int | None = None) -> None:
        where = f"line {line}: " if line is not None else ""
        super().__init__(f"{where}{problem}" + (f" (at {path})" if path else ""))
        self.problem = problem
        self.path = path
        self.line = line


def load(
    data: bytes | str,
    *,
    max_bytes: int = MAX_BYTES,
    max_depth: int = MAX_DEPTH,
    max_nodes: int = MAX_NODES,
) -> Any:
    """The single document in ``data`` (None when empty), or ``YamlError``."""
    if len(data) > max_bytes:
        raise YamlError(f"larger than {max_bytes} bytes")
    text = _decode(data) if isinstance(data, bytes) else data
    loader = _Loader(text, max_depth)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else None
            raise YamlError(f"not valid YAML: {exc.problem or exc.context}", line=line) from None
        except yaml.YAMLError as exc:
            raise YamlError(f"not valid YAML: {exc}") from None
        if node is None:
            return None
        _Checker(max_depth, max_nodes).check(node)
        try:
            return loader.construct_document(node)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else None
            raise YamlError(f"cannot be read: {exc.problem or exc.context}", line=line) from None
        except YamlError:
            raise
        except (ValueError, OverflowError, yaml.YAMLError) as exc:
            # int("9" * 5000) raises ValueError past Python's digit limit.
            raise YamlError(f"a value cannot be read: {str(exc)[:120]}") from None
    finally:
        loader.dispose()


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise YamlError(f"not UTF-8 text (byte {exc.start})", line=line) from None


class _Loader(yaml.SafeLoader):
    """SafeLoader whose composer stops at ``max_depth`` instead of recursing until it crashes."""

    def __init__(self, text: str, max_depth: int) -> None:
        super().__init__(text)
        self._depth = 0
        self._max_depth = max_depth

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        try:
            if self._depth > self._max_depth:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise YamlError(f"nested deeper than {self._max_depth} levels", line=mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_bounded_int(self, node: ScalarNode) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # past Python's 4,300-digit limit for int()
            raise YamlError("integer too long", line=node.start_mark.line + 1) from None


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_bounded_int)


class _Checker:
    """One walk over the composed graph (each node once, aliases shared): expanded size and
    depth, duplicate keys, recursive aliases."""

    def __init__(self, max_depth: int, max_nodes: int) -> None:
        self.max_depth = max_depth
        self.max_nodes = max_nodes
        self._seen: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded size, depth)
        self._active: set[int] = set()

    def check(self, node: Node) -> None:
        size, _ = self._visit(node, "")
        if size > self.max_nodes:  # pragma: no cover - _visit raises first
            raise YamlError(f"more than {self.max_nodes} values")

    def _visit(self, node: Node, path: str) -> tuple[int, int]:
        key = id(node)
        if key in self._seen:
            return self._seen[key]
        if key in self._active:
            raise YamlError("an alias refers to itself", path, node.start_mark.line + 1)
        if isinstance(node, ScalarNode):
            return 1, 0
        self._active.add(key)
        size, depth = 1, 0
        for child, child_path in self._children(node, path):
            child_size, child_depth = self._visit(child, child_path)
            size += child_size
            depth = max(depth, child_depth + 1)
            if size > self.max_nodes:
                raise YamlError(
                    f"more than {self.max_nodes} values once aliases are expanded",
                    path,
                    node.start_mark.line + 1,
                )
            if depth > self.max_depth:
                raise YamlError(
                    f"nested deeper than {self.max_depth} levels once aliases are expanded",
                    path,
                    node.start_mark.line + 1,
                )
        self._active.discard(key)
        self._seen[key] = (size, depth)
        return size, depth

    @staticmethod
    def _children(node: Node, path: str) -> list[tuple[Node, str]]:
        if isinstance(node, SequenceNode):
            return [(child, f"{path}[{i}]") for i, child in enumerate(node.value)]
        assert isinstance(node, MappingNode)
        out: list[tuple[Node, str]] = []
        keys: set[tuple[str, str]] = set()
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                out.append((value_node, path))  # `<<: *defaults` overrides by design
                continue
            if isinstance(key_node, ScalarNode):
                name = str(key_node.value)
                child_path = f"{path}.{name}" if path else name
                if (key_node.tag, name) in keys:
                    raise YamlError(
                        f"duplicate key {name!r}", child_path, key_node.start_mark.line + 1
                    )
                keys.add((key_node.tag, name))
            else:
                child_path = path
                out.append((key_node, path))
            out.append((value_node, child_path))
        return out
