"""A job file's YAML read with the line of every key and value, within bounds.

`yaml.safe_load` loses lines and accepts what would hang or exhaust a run: a file nested deeper than
Python's recursion allows, an alias that contains itself, a "billion laughs" of aliases. `LineLoader`
keeps the lines (so every problem names one) and refuses those with the line to look at.
"""

from __future__ import annotations

from typing import Any

import yaml

from evalpipe.pipeline.job.templates import FieldPath

# Values that YAML aliases may add to a job file beyond what it writes out: plenty for `<<: *defaults`
# blocks, far too few for an alias bomb.
MAX_ALIAS_EXPANSION = 10_000
MAX_YAML_DEPTH = 100  # levels of nesting; a job file needs a handful, inline items a few more


class StructureError(Exception):
    """YAML too deep, or aliases that would make a small file a huge or endless tree: what, and the line."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


class LineLoader(yaml.SafeLoader):
    """`yaml.safe_load` that also keeps the line of every mapping key and sequence item, and refuses
    aliases that refer to themselves or expand past `MAX_ALIAS_EXPANSION` values."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.key_lines: dict[FieldPath, int] = {}
        self.value_marks: dict[FieldPath, tuple[int, str | None]] = {}  # a scalar's first line and style
        self.duplicate_keys: list[tuple[FieldPath, int, int]] = []
        self.aliases: list[tuple[str, int, yaml.Node]] = []  # (anchor, line, the node it refers to)
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        # The composer recurses once per level: refuse a deep file before Python's recursion limit does.
        if self.depth >= MAX_YAML_DEPTH:
            line = self.peek_event().start_mark.line + 1  # type: ignore[no-untyped-call]
            raise StructureError(f"the YAML nests more than {MAX_YAML_DEPTH} levels deep", line)
        self.depth += 1
        try:
            return self._compose_node(parent, index)
        finally:
            self.depth -= 1

    def _compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            node = super().compose_node(parent, index)
            if node is not None:
                self.aliases.append((str(event.anchor), event.start_mark.line + 1, node))
            return node
        return super().compose_node(parent, index)

    def load_with_lines(self) -> Any:
        """The document's data, recording lines on the way; None for an empty document."""
        node = self.get_single_node()
        if node is None:
            return None
        if self.aliases:
            self._check_aliases(node)
        self._record(node, (), frozenset())
        return self.construct_document(node)

    def _check_aliases(self, root: yaml.Node) -> None:
        """Raise `StructureError` for a recursive alias, or aliases adding more than `MAX_ALIAS_EXPANSION`
        values to what the file writes out (a "billion laughs" would exhaust memory at run time)."""
        sizes: dict[int, int] = {}  # node id -> values in its tree once aliases are expanded
        open_nodes: set[int] = set()  # the nodes on the current path: meeting one again is a cycle
        stack: list[tuple[yaml.Node, bool]] = [(root, False)]  # iterative: a deep file must not overflow
        while stack:
            node, finished = stack.pop()
            children = _children(node)
            if finished:
                sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
                open_nodes.discard(id(node))
                continue
            if id(node) in sizes:
                continue
            open_nodes.add(id(node))
            stack.append((node, True))
            for child in children:
                if id(child) in open_nodes:
                    anchor, line = next((a, line) for a, line, target in self.aliases if target is child)
                    raise StructureError(f"the alias *{anchor} refers to a value that contains it (a recursive "
                                      "alias); write the value out instead", line)
                if id(child) not in sizes:
                    stack.append((child, False))
        added = sizes[id(root)] - len(sizes)
        if added > MAX_ALIAS_EXPANSION:
            anchor, line, target = max(self.aliases, key=lambda alias: sizes[id(alias[2])])
            raise StructureError(f"aliases expand to {added:,} more values than the file writes out (at most "
                              f"{MAX_ALIAS_EXPANSION:,}); the largest is *{anchor} ({sizes[id(target)]:,} values): "
                              "use fewer or smaller aliases", line)

    def _record(self, node: yaml.Node, path: FieldPath, ancestors: frozenset[int]) -> None:
        # Aliases can make a small file a huge (or endless) tree: lines beyond these are not worth a hang.
        if id(node) in ancestors or len(self.key_lines) > 100_000:
            return
        ancestors |= {id(node)}
        if isinstance(node, yaml.ScalarNode):
            self.value_marks[path] = (node.start_mark.line + 1, node.style)
        elif isinstance(node, yaml.SequenceNode):
            for index, child in enumerate(node.value):
                self.key_lines[(*path, index)] = child.start_mark.line + 1
                self._record(child, (*path, index), ancestors)
        elif isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key, line = str(key_node.value), key_node.start_mark.line + 1
                if key in seen:  # safe_load silently keeps the last one: a typo'd copy would go unnoticed
                    self.duplicate_keys.append(((*path, key), seen[key], line))
                seen[key] = line
                self.key_lines[(*path, key)] = line
                self._record(value_node, (*path, key), ancestors)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []
