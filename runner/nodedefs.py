"""How the runner reads a classic (V1) node class: its inputs in widget order, outputs and flags."""

from __future__ import annotations

import dataclasses

# Input types the frontend draws a widget for (combos are lists of options or "COMBO").
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
SEED_NAMES = ("seed", "noise_seed")  # INT widgets that get control_after_generate implicitly
# ComfyUI V3 sockets: a combo whose chosen option brings its own inputs (named "<combo>.<input>"
# in API prompts), and a socket taking whatever type is connected to it.
# An autogrow input is a family of sockets "<name>.a", "<name>.b", ...: never missing as a whole.
DYNAMIC_COMBO, MATCH_TYPE, AUTOGROW = "COMFY_DYNAMICCOMBO_V3", "COMFY_MATCHTYPE_V3", "COMFY_AUTOGROW_V3"


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One entry of ``INPUT_TYPES()["required" | "optional"]``: ``name: (type, options)``."""

    name: str
    type: str | list
    options: dict
    required: bool

    @property
    def is_combo(self) -> bool:
        return isinstance(self.type, (list, tuple)) or self.type == "COMBO"

    @property
    def is_dynamic_combo(self) -> bool:
        return self.type == DYNAMIC_COMBO

    @property
    def choices(self) -> list:
        if self.is_dynamic_combo:
            return [option["key"] for option in self.options.get("options", [])]
        return list(self.type) if isinstance(self.type, (list, tuple)) else list(self.options.get("options", []))

    def option_inputs(self, choice) -> list[InputSpec]:
        """A dynamic combo's inputs for ``choice``, named ``"<this>.<input>"``, in widget order."""
        option = next((o for o in self.options.get("options", []) if o["key"] == choice), None)
        inputs = (option or {}).get("inputs") or {}
        return [InputSpec(f"{self.name}.{name}", spec[0], spec[1] if len(spec) > 1 else {}, section == "required")
                for section in ("required", "optional") for name, spec in (inputs.get(section) or {}).items()]

    @property
    def socket_type(self) -> str:
        return "COMBO" if self.is_combo else self.type

    @property
    def has_widget(self) -> bool:
        return ((self.is_combo or self.is_dynamic_combo or self.type in WIDGET_TYPES)
                and not self.options.get("forceInput") and not self.options.get("hidden"))

    @property
    def helper_values(self) -> int:
        """How many extra ``widgets_values`` the frontend saves right after this widget's value:
        the control_after_generate mode (INT; combos add a filter string) and upload buttons."""
        control = self.options.get("control_after_generate")
        n = 0
        if self.type == "INT" and (control if control is not None else self.name in SEED_NAMES):
            n = 1
        elif self.is_combo and control:
            n = 2
        if self.options.get("image_upload") or self.options.get("video_upload"):
            n += 1
        return n

    @property
    def default(self):
        if "default" in self.options:
            return self.options["default"]
        return self.choices[0] if (self.is_combo or self.is_dynamic_combo) and self.choices else None


def node_inputs(cls) -> dict[str, InputSpec]:
    """Required then optional inputs, in declaration order (the frontend's widget order)."""
    types = cls.INPUT_TYPES()
    specs = {}
    for section in ("required", "optional"):
        for name, spec in (types.get(section) or {}).items():
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            specs[name] = InputSpec(name, spec[0], options, section == "required" and spec[0] != AUTOGROW)
    return specs


def hidden_inputs(cls) -> dict[str, str]:
    """``{input_name: "PROMPT" | "EXTRA_PNGINFO" | "UNIQUE_ID" | ...}``."""
    return dict(cls.INPUT_TYPES().get("hidden") or {})


def return_types(cls) -> tuple:
    return tuple(getattr(cls, "RETURN_TYPES", ()))


def is_output_node(cls) -> bool:
    return getattr(cls, "OUTPUT_NODE", False) is True


def types_match(received, expected) -> bool:
    """ComfyUI's link type check: equal, either is ``*`` (or a match-type socket), or the
    comma-separated unions overlap."""
    received = "COMBO" if isinstance(received, (list, tuple)) else received
    expected = "COMBO" if isinstance(expected, (list, tuple)) else expected
    if received == expected or {"*", MATCH_TYPE} & {received, expected}:
        return True
    return bool(_union(received) & _union(expected))


def _union(type_: str) -> set[str]:
    return {t.strip() for t in str(type_).split(",")}
