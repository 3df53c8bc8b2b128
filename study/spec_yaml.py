"""Reading a study spec's YAML, with limits that keep bad input cheap.

``yaml.safe_load`` composes a "billion laughs" alias bomb without complaint
(nine levels of nine aliases stand for 387 million values, and anything that
walks them, like an error message, never finishes), recurses once per nesting
level until ``RecursionError``, and silently keeps the last of two equal keys.
:class:`SpecLoader` refuses all of these while it composes, before anything is
constructed, with a :class:`SpecYAMLError` naming the limit and the line.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

#: Largest spec, in bytes of UTF-8 text.
MAX_SPEC_BYTES = 1 << 20
#: Most alias uses (``*name``) in one spec.
MAX_ALIASES = 100
#: Most values that all alias uses together may stand for, once expanded.
MAX_ALIAS_VALUES = 10_000
#: Deepest nesting of mappings and sequences (the top-level mapping is level 1).
MAX_DEPTH = 32

_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"


class SpecYAMLError(Exception):
    """Spec text outside a spec's limits; the message says which limit, where, and the fix."""


class SpecLoader(yaml.SafeLoader):
    """A ``SafeLoader`` that counts aliases, nesting depth and keys while composing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._alias_values = 0
        self._depth = 0
        self._path: list[Optional[str]] = []
        self._sizes: dict[int, int] = {}  # id(node) -> values it stands for, aliases expanded

    def compose_node(self, parent: Optional[Node], index: Any) -> Node:
        """Compose one node, refusing too many aliases, too deep nesting and repeated keys."""
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            self._count_alias(event)
            return super().compose_node(parent, index)
        nested = isinstance(event, yaml.CollectionStartEvent)
        if nested:
            self._enter(event)
        self._path.append(_label(index))
        node = super().compose_node(parent, index)
        self._sizes[id(node)] = 1 + sum(self._sizes[id(child)] for child in _children(node))
        if isinstance(node, MappingNode):
            self._check_unique_keys(node)
        self._path.pop()
        if nested:
            self._depth -= 1
        return node

    def _count_alias(self, event: yaml.AliasEvent) -> None:
        """Count one alias use and the values it stands for; refuse past the limits."""
        self._aliases += 1
        line = event.start_mark.line + 1
        if self._aliases > MAX_ALIASES:
            raise SpecYAMLError(f"more than {MAX_ALIASES} YAML aliases (*name) by line {line}, the most a spec "
                                "may use; write the values out instead")
        target = self.anchors.get(event.anchor)
        if target is None:
            return  # the composer reports the undefined alias
        if id(target) not in self._sizes:
            raise SpecYAMLError(f"alias *{event.anchor} at line {line} is inside its own anchor "
                                f"&{event.anchor}; a spec cannot contain itself")
        self._alias_values += self._sizes[id(target)]
        if self._alias_values > MAX_ALIAS_VALUES:
            raise SpecYAMLError(f"YAML aliases (*name) expand to more than {MAX_ALIAS_VALUES} values by line {line}, "
                                "the most a spec may use (an alias bomb?); write the values out instead")

    def _enter(self, event: yaml.Event) -> None:
        """Go one mapping or sequence deeper; refuse past :data:`MAX_DEPTH`."""
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise SpecYAMLError(f"nesting deeper than {MAX_DEPTH} levels at line {event.start_mark.line + 1}; "
                                "a spec needs only a few levels (look for unclosed brackets)")

    def _check_unique_keys(self, node: MappingNode) -> None:
        """Refuse a mapping in which two keys are equal (as the constructed dict would see them)."""
        seen: dict[Any, ScalarNode] = {}
        for key, _value in node.value:
            if not isinstance(key, ScalarNode):
                continue  # unhashable: the constructor refuses it
            ident = (key.tag, key.value) if key.tag in (_STR_TAG, _MERGE_TAG) else self.construct_object(key)
            first = seen.setdefault(ident, key)
            if first is not key:
                path = ".".join(p for p in self._path if p is not None)
                where = f"in {path}" if path else "at the top level"
                raise SpecYAMLError(f"duplicate key {key.value[:100]!r} {where} "
                                    f"(lines {first.start_mark.line + 1} and {key.start_mark.line + 1}); keep one")


def _label(index: Any) -> Optional[str]:
    """How a node's place shows in a path: its key, its list index, or nothing (a key, the root)."""
    if isinstance(index, ScalarNode):
        return index.value
    return str(index) if isinstance(index, int) else None


def _children(node: Node) -> list[Node]:
    """The nodes directly inside ``node``: items, or keys and values."""
    if isinstance(node, SequenceNode):
        return node.value
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def check_size(n_bytes: int) -> None:
    """Refuse spec text longer than :data:`MAX_SPEC_BYTES` (size given in UTF-8 bytes)."""
    if n_bytes > MAX_SPEC_BYTES:
        mib = math.ceil(n_bytes / (1 << 20) * 10) / 10
        raise SpecYAMLError(f"the file is {mib:.1f} MiB; a spec is at most {MAX_SPEC_BYTES >> 20} MiB of YAML "
                            "(is this the right file?)")


def read_spec_file(path: Path) -> str:
    """A spec file's text; reads at most one byte past the limit, and refuses text that is not UTF-8."""
    with path.open("rb") as fh:
        raw = fh.read(MAX_SPEC_BYTES + 1)
    check_size(max(len(raw), path.stat().st_size))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SpecYAMLError(f"not UTF-8 text (byte {err.start} is {raw[err.start]:#04x}); "
                            "save the spec as UTF-8 YAML (is this the right file?)") from None


def load_yaml(text: str) -> Any:
    """Parse one YAML document with :class:`SpecLoader`.

    Raises :class:`SpecYAMLError` past a limit, ``yaml.YAMLError`` for malformed
    YAML and ``ValueError`` for values YAML cannot build (e.g. month 13).
    """
    check_size(len(text.encode("utf-8")))
    loader = SpecLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
