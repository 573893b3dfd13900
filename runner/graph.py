"""The dependency graph of an API prompt: links, ancestors and execution order."""

from __future__ import annotations

from collections.abc import Iterator


def is_link(value) -> bool:
    """API prompts spell a link ``[source_node_id, output_slot]``; other lists are wrapped."""
    return isinstance(value, list)


def links(node: dict) -> Iterator[tuple[str, str, int]]:
    """``(input_name, source_node_id, output_slot)`` for each linked input of an API node."""
    for name, value in node["inputs"].items():
        if is_link(value) and len(value) == 2:
            yield name, str(value[0]), value[1]


def node_sort_key(node_id: str) -> tuple:
    """Numeric ids in numeric order ("9" before "10"; "12:3" after "12")."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in str(node_id).split(":"))


def execution_order(prompt: dict, outputs: list[str]) -> list[str]:
    """The outputs and their ancestors, each after everything it depends on. The graph must be
    acyclic (validation guarantees it)."""
    order: list[str] = []
    done: set[str] = set()

    def visit(node_id: str) -> None:
        if node_id in done:
            return
        done.add(node_id)
        for _, source, _ in sorted(links(prompt[node_id]), key=lambda link: node_sort_key(link[1])):
            visit(source)
        order.append(node_id)

    for output in sorted(outputs, key=node_sort_key):
        visit(output)
    return order
