"""Primitives and logic of ComfyUI's templates: PrimitiveInt / Float / Boolean,
ComfyMathExpression (``floor(a * b) + 1``) and the If/Else ComfySwitchNode."""

from __future__ import annotations

import ast
import math
import operator

MATCH_TYPE = "COMFY_MATCHTYPE_V3"  # ComfyUI's "same type as what is connected" socket
LONG = 9223372036854775807
NAMES = [chr(c) for c in range(ord("a"), ord("z") + 1)]


class PrimitiveInt:
    CATEGORY = "utilities/primitive"
    RETURN_TYPES = ("INT",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"min": -LONG, "max": LONG, "control_after_generate": "fixed"})}}

    def execute(self, value):
        return (int(value),)


class PrimitiveFloat:
    CATEGORY = "utilities/primitive"
    RETURN_TYPES = ("FLOAT",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("FLOAT", {"min": -LONG, "max": LONG, "step": 0.1})}}

    def execute(self, value):
        return (float(value),)


class PrimitiveBoolean:
    CATEGORY = "utilities/primitive"
    RETURN_TYPES = ("BOOLEAN",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("BOOLEAN", {})}}

    def execute(self, value):
        return (bool(value),)


_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
              ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
              ast.Pow: operator.pow, ast.USub: operator.neg, ast.UAdd: operator.pos,
              ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
              ast.Eq: operator.eq, ast.NotEq: operator.ne}
_FUNCTIONS = {"floor": math.floor, "ceil": math.ceil, "round": round, "abs": abs, "min": min,
              "max": max, "sqrt": math.sqrt, "int": int, "float": float}


def evaluate(expression: str, names: dict):
    """A safe arithmetic evaluator: numbers, the named values, + − × ÷ // % **, comparisons,
    ``a if c else b`` and floor / ceil / round / abs / min / max / sqrt / int / float."""
    def walk(node):
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, bool)):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in names:
                raise ValueError(f"expression {expression!r}: unknown name {node.id!r}")
            return names[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](walk(node.operand))
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _OPERATORS:
            return _OPERATORS[type(node.ops[0])](walk(node.left), walk(node.comparators[0]))
        if isinstance(node, ast.IfExp):
            return walk(node.body) if walk(node.test) else walk(node.orelse)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS \
                and not node.keywords:
            return _FUNCTIONS[node.func.id](*(walk(a) for a in node.args))
        raise ValueError(f"expression {expression!r}: {ast.dump(node)[:60]} is not supported")
    return walk(ast.parse(expression.strip(), mode="eval"))


class ComfyMathExpression:
    DESCRIPTION = "Evaluate a math expression over the connected values a, b, c, ..."
    CATEGORY = "utilities"
    RETURN_TYPES = ("FLOAT", "INT", "BOOLEAN")
    RETURN_NAMES = ("FLOAT", "INT", "BOOL")
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "expression": ("STRING", {"default": "a + b", "multiline": True}),
            "values": ("COMFY_AUTOGROW_V3", {"template": {"input": {"required": {
                "value": ("FLOAT,INT,BOOLEAN", {})}}, "names": NAMES, "min": 1}})}}

    def execute(self, expression, values=None, **dotted):
        names = {name.split(".", 1)[1]: value for name, value in dotted.items() if name.startswith("values.")}
        result = evaluate(expression, names)
        return float(result), int(result), bool(result)


class ComfySwitchNode:
    DESCRIPTION = "Pass on_true or on_false on, by the switch."
    CATEGORY = "utilities/logic"
    RETURN_TYPES = (MATCH_TYPE,)
    RETURN_NAMES = ("output",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls):
        template = {"template_id": "switch", "allowed_types": "*"}
        return {"required": {"switch": ("BOOLEAN", {}),
                             "on_false": (MATCH_TYPE, {"lazy": True, "template": template}),
                             "on_true": (MATCH_TYPE, {"lazy": True, "template": template})}}

    def check_lazy_status(self, switch, on_false=None, on_true=None):
        return ["on_true" if switch else "on_false"]

    def execute(self, switch, on_false=None, on_true=None):
        return (on_true if switch else on_false,)


NODES = {cls.__name__: cls for cls in (PrimitiveInt, PrimitiveFloat, PrimitiveBoolean,
                                       ComfyMathExpression, ComfySwitchNode)}
DISPLAY_NAMES = {"PrimitiveInt": "Int", "PrimitiveFloat": "Float", "PrimitiveBoolean": "Boolean",
                 "ComfyMathExpression": "Math Expression", "ComfySwitchNode": "If/Else Switch"}
