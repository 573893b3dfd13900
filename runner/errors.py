"""ComfyUI-shaped prompt errors: ``{"error": {...}, "node_errors": {node_id: {...}}}``."""

from __future__ import annotations


def error(type: str, message: str, details: str = "", **extra_info) -> dict:
    """One error object as ComfyUI sends it: ``{"type", "message", "details", "extra_info"}``."""
    return {"type": type, "message": message, "details": details, "extra_info": extra_info}


class PromptError(ValueError):
    """A workflow that cannot run. ``to_dict()`` is the body ComfyUI answers ``POST /prompt`` with."""

    def __init__(self, error: dict, node_errors: dict | None = None):
        self.error = error
        self.node_errors = node_errors or {}
        super().__init__(format_prompt_error(self.error, self.node_errors))

    def to_dict(self) -> dict:
        return {"error": self.error, "node_errors": self.node_errors}


def format_prompt_error(error: dict, node_errors: dict) -> str:
    """Readable text: the prompt-level error, then one line per node error."""
    head = error["message"]
    if error.get("details") and not node_errors:
        head += f": {error['details']}"
    lines = [head]
    for node_id, entry in node_errors.items():
        for e in entry["errors"]:
            where, detail = f"node {node_id} ({entry['class_type']})", e.get("details") or ""
            name = (e.get("extra_info") or {}).get("input_name")
            if name:
                where += f" input '{name}'"
                detail = "" if detail == name else detail.removeprefix(f"{name} - ")
            lines.append(f"  {where}: {e['message']}" + (f": {detail}" if detail else ""))
    return "\n".join(lines)
