"""Parse YAML in a short-lived child process, so that the resident daemon never loads it.

PyYAML and its C extension cost the supervisor about 1.6 MiB of resident memory
for as long as it runs, a tenth of its 16 MiB budget with 100 bots, to read one
file at start-up and on reload. The child (this module's
:func:`main`, run isolated by :mod:`..runtime.child`, about 40 ms) reads the YAML on stdin and
writes JSON on stdout: ``{"document": ...}`` or ``{"error": {"line", "column", "problem"}}``.
Values JSON cannot carry (YAML dates) become strings; the supervisor reads only
strings, numbers, lists and mappings.
"""

from __future__ import annotations

import json
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class YamlChildError(Exception):
    """The parsing child could not run or answered nonsense."""


# Bounds on what a config may be, checked in the child so that neither the child
# nor the daemon waiting on it can be made to crash or hang. libyaml composes
# nodes recursively in C: a few tens of thousands of "[" overflow its stack
# (SIGSEGV), a thousand overflow Python's repr and json. Aliases are shared
# references: ten levels of ten aliases each make 10**10 values once written out
# as JSON. A KissBot config is a few levels deep and a few hundred values.
MAX_DEPTH = 64
MAX_VALUES = 200_000


def _depth_error(raw: bytes, yaml: Any, loader: Any) -> dict[str, Any] | None:
    """The first collection nested deeper than MAX_DEPTH, from libyaml's event
    stream (which keeps an explicit stack and cannot overflow), before composing."""
    starts = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
    ends = (yaml.SequenceEndEvent, yaml.MappingEndEvent)
    depth = 0
    for event in yaml.parse(raw, Loader=loader):
        if isinstance(event, starts):
            depth += 1
            if depth > MAX_DEPTH:
                mark = event.start_mark
                return {
                    "line": mark.line + 1,
                    "column": mark.column + 1,
                    "problem": f"nested deeper than {MAX_DEPTH} levels",
                }
        elif isinstance(event, ends):
            depth -= 1
    return None


def _shape_problem(document: object) -> str | None:
    """What makes the composed document too big, aliases written out in full:
    more than MAX_VALUES values (a recursive alias never ends) or, through
    aliases of aliases, more than MAX_DEPTH levels; None when it is fine."""
    left = MAX_VALUES
    stack: list[tuple[object, int]] = [(document, 0)]
    while stack:
        left -= 1
        if left < 0:
            return (
                f"more than {MAX_VALUES} values once its aliases are expanded "
                "(a recursive alias, or aliases of aliases)"
            )
        value, depth = stack.pop()
        if isinstance(value, dict | list) and depth >= MAX_DEPTH:
            return f"nested deeper than {MAX_DEPTH} levels once its aliases are expanded"
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for item in (*value.keys(), *value.values()))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
    return None


def _unique_keys_loader(yaml: Any, base: Any) -> Any:
    """``base`` that refuses a key written twice in one mapping.

    PyYAML keeps the last of two equal keys without a word: a second
    ``supervisor:`` section silently replaced the first. The keys compared are
    the scalars as written (``<<`` merge keys aside, whose keys may be overridden).
    """

    class UniqueKeyLoader(base):  # type: ignore[misc]
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[str, Any] = {}
            for key_node, _value in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                    continue
                first = seen.setdefault(key_node.value, key_node)
                if first is not key_node:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"the key {key_node.value!r} is written twice in one mapping (first on "
                        f"line {first.start_mark.line + 1}); YAML would keep only the second "
                        "and drop the first without a word: merge them into one",
                        key_node.start_mark,
                    )
            return super().construct_mapping(node, deep)

    return UniqueKeyLoader


def parse_here(raw: bytes) -> dict[str, Any]:
    """The child's work, also usable in-process: document or error, as a dict."""
    import yaml

    loader = _unique_keys_loader(yaml, getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    try:
        too_deep = _depth_error(raw, yaml, loader)
        if too_deep is not None:
            return {"error": too_deep}
        document = yaml.load(raw, Loader=loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        return {
            "error": {
                "line": None if mark is None else mark.line + 1,
                "column": None if mark is None else mark.column + 1,
                "problem": str(e.problem),
            }
        }
    except yaml.reader.ReaderError as e:
        # Bytes that are not text: its str() spans two lines and names "<byte string>".
        return {
            "error": {"line": None, "column": None, "problem": f"{e.reason} (byte {e.position})"}
        }
    except yaml.YAMLError as e:
        return {"error": {"line": None, "column": None, "problem": " ".join(str(e).split())}}
    except (ValueError, OverflowError) as e:
        # A scalar PyYAML's constructors choke on, e.g. an integer of more than
        # 4300 digits (Python's int() limit): not a YAMLError, but the same fault.
        return {"error": {"line": None, "column": None, "problem": f"a value cannot be read ({e})"}}
    problem = _shape_problem(document)
    if problem is not None:
        return {"error": {"line": None, "column": None, "problem": problem}}
    return {"document": document}


def parse_in_child(raw: bytes) -> dict[str, Any]:
    """Run :func:`parse_here` in a child (:mod:`..runtime.child`: isolated, so a
    ``yaml.py`` dropped in the checkout is never imported)."""
    from ..runtime.child import ChildError, describe_exit, run_module

    try:
        answer, code = run_module("kissbot_supervisor.config.yamlparse", raw)
    except ChildError as e:
        raise YamlChildError(str(e)) from None
    try:
        result: dict[str, Any] = json.loads(answer)
    except ValueError:
        raise YamlChildError(describe_exit("the YAML parser", code)) from None
    return result


def main() -> None:
    result = parse_here(sys.stdin.buffer.read())
    sys.stdout.write(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
