"""A small stand-in for ComfyUI's execution.py: validate and run an API-format prompt.

Kept from ComfyUI: validation (unknown class, missing required input, link to a missing node or
output, return type vs input type with ComfyUI's union rule, INT/FLOAT/STRING/BOOLEAN
conversion, min/max, combo choices, VALIDATE_INPUTS taking over the checks of the inputs it
names); execution of every OUTPUT_NODE's dependencies first; one node instance per node id;
outputs stored as lists with the map-over-lists rule (the longest input list sets the number
of calls, shorter lists repeat their last item; OUTPUT_IS_LIST outputs are concatenated);
hidden PROMPT / EXTRA_PNGINFO / UNIQUE_ID inputs; the interrupt check before each node; the
output cache across runs keyed by inputs, upstream keys and IS_CHANGED (for V3 nodes
(comfy_api io.ComfyNode) their fingerprint_inputs when they override it); V3 combos
("COMBO", {"options": [...]}) checked against their options; V3 results (io.NodeOutput) unwrapped.
Left out: lazy inputs, subgraph expansion, async nodes, partial execution, V3 class clones.
"""

from __future__ import annotations

import inspect
from typing import Any

import comfy.model_management
from comfy_api.internal import _ComfyNodeInternal, _NodeOutputInternal, first_real_override


class PromptError(Exception):
    """The prompt failed validation; .errors lists (node_id, type, details)."""

    def __init__(self, errors: list):
        self.errors = errors
        super().__init__("; ".join(f"node {n}: {t}: {d}" for n, t, d in errors))


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def types_match(received: Any, expected: Any) -> bool:
    """comfy_execution.validation.validate_node_input (non-strict)."""
    if not received != expected:  # IO.ANY ("*") overrides __ne__
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    return bool({t.strip() for t in received.split(",")} & {t.strip() for t in expected.split(",")})


def input_spec(cls: type, name: str) -> tuple:
    """(type, options, category) of one input of a node class."""
    spec = cls.INPUT_TYPES()
    for category in ("required", "optional"):
        if name in spec.get(category, {}):
            entry = spec[category][name]
            return entry[0], (entry[1] if len(entry) > 1 else {}), category
    return None, {}, None


def validate(prompt: dict, mappings: dict) -> list:
    """All validation errors of a prompt (empty when it may run)."""
    errors = []
    for node_id, node in prompt.items():
        cls = mappings.get(node.get("class_type"))
        if cls is None:
            errors.append((node_id, "invalid_prompt", f"unknown node type {node.get('class_type')!r}"))
            continue
        spec = cls.INPUT_TYPES()
        inputs = node.get("inputs", {})
        vfunc = getattr(cls, "VALIDATE_INPUTS", None)
        vnames = set(inspect.getfullargspec(vfunc).args) if vfunc is not None else set()
        for category in ("required", "optional"):
            for name, entry in spec.get(category, {}).items():
                kind, opts = entry[0], (entry[1] if len(entry) > 1 else {})
                if name not in inputs:
                    if category == "required":
                        errors.append((node_id, "required_input_missing", name))
                    continue
                value = inputs[name]
                if _is_link(value):
                    src = prompt.get(value[0])
                    if src is None or src.get("class_type") not in mappings:
                        errors.append((node_id, "bad_linked_input", f"{name} -> missing node {value[0]}"))
                        continue
                    returns = mappings[src["class_type"]].RETURN_TYPES
                    if value[1] >= len(returns):
                        errors.append((node_id, "bad_linked_input", f"{name} -> output {value[1]} of {value[0]}"))
                        continue
                    if not types_match(returns[value[1]], kind):
                        errors.append((node_id, "return_type_mismatch",
                                       f"{name}: received {returns[value[1]]}, expects {kind}"))
                    continue
                try:
                    if kind == "INT":
                        value = int(value)
                    elif kind == "FLOAT":
                        value = float(value)
                    elif kind == "STRING":
                        value = str(value)
                    elif kind == "BOOLEAN":
                        value = bool(value)
                except (TypeError, ValueError) as exc:
                    errors.append((node_id, "invalid_input_type", f"{name}: {exc}"))
                    continue
                inputs[name] = value
                if name in vnames:
                    continue
                if "min" in opts and value < opts["min"]:
                    errors.append((node_id, "value_smaller_than_min", f"{name}: {value} < {opts['min']}"))
                elif "max" in opts and value > opts["max"]:
                    errors.append((node_id, "value_bigger_than_max", f"{name}: {value} > {opts['max']}"))
                elif isinstance(kind, list) or kind == "COMBO":
                    choices = opts.get("options", []) if kind == "COMBO" else kind
                    if value not in choices:
                        errors.append((node_id, "value_not_in_list", f"{name}: {value!r} not in {choices[:20]}"))
        if vfunc is not None:
            args = {k: inputs[k] for k in vnames if k in inputs and not _is_link(inputs[k])}
            result = vfunc(**args)
            if result is not True:
                errors.append((node_id, "custom_validation_failed", str(result)))
    if not any(getattr(mappings.get(n.get("class_type")), "OUTPUT_NODE", False) for n in prompt.values()):
        errors.append(("", "prompt_no_outputs", "Prompt has no outputs"))
    return errors


class Executor:
    """Runs prompts like ComfyUI's PromptExecutor; keeps node outputs between runs (its cache)."""

    def __init__(self, mappings: dict):
        self.mappings = mappings
        self.cache: dict = {}  # node_id -> (key, outputs)
        self.instances: dict = {}
        self.executed: list = []  # node ids run (not served from cache) by the last run
        self.ui: dict = {}

    def _key(self, prompt: dict, node_id: str, memo: dict) -> Any:
        if node_id in memo:
            return memo[node_id]
        node = prompt[node_id]
        cls = self.mappings[node["class_type"]]
        parts = []
        for name, value in sorted(node["inputs"].items()):
            parts.append((name, ("link", self._key(prompt, value[0], memo), value[1]) if _is_link(value) else repr(value)))
        changed = None
        if issubclass(cls, _ComfyNodeInternal) and first_real_override(cls, "fingerprint_inputs") is not None:
            check = cls.fingerprint_inputs
        else:
            check = getattr(cls, "IS_CHANGED", None)
        if check is not None:
            constants = {k: v for k, v in node["inputs"].items() if not _is_link(v)}
            changed = repr(check(**constants))
        memo[node_id] = (node["class_type"], tuple(parts), changed)
        return memo[node_id]

    def run(self, prompt: dict, extra_pnginfo: Any = None) -> dict:
        """Validate, then execute; returns {node_id: outputs (one list per output)}."""
        errors = validate(prompt, self.mappings)
        if errors:
            raise PromptError(errors)
        self.executed, self.ui, results, memo = [], {}, {}, {}
        outputs = [n for n, node in prompt.items() if getattr(self.mappings[node["class_type"]], "OUTPUT_NODE", False)]
        for node_id in sorted(outputs):
            self._execute(prompt, node_id, results, memo, extra_pnginfo)
        return results

    def _execute(self, prompt: dict, node_id: str, results: dict, memo: dict, extra_pnginfo: Any) -> None:
        if node_id in results:
            return
        node = prompt[node_id]
        for value in node["inputs"].values():
            if _is_link(value):
                self._execute(prompt, value[0], results, memo, extra_pnginfo)
        key = self._key(prompt, node_id, memo)
        cached = self.cache.get(node_id)
        if cached is not None and cached[0] == key:
            results[node_id] = cached[1]
            return
        cls = self.mappings[node["class_type"]]
        data = {}
        for name, value in node["inputs"].items():
            kind, _, category = input_spec(cls, name)
            if category is None:
                continue
            data[name] = results[value[0]][value[1]] if _is_link(value) else [value]
        for name, kind in cls.INPUT_TYPES().get("hidden", {}).items():
            data[name] = [{"PROMPT": prompt, "EXTRA_PNGINFO": extra_pnginfo, "UNIQUE_ID": node_id}.get(kind)]
        obj = self.instances.get(node_id)
        if obj is None or type(obj) is not cls:
            obj = self.instances[node_id] = cls()
        func = getattr(obj, cls.FUNCTION)
        calls = []
        if getattr(cls, "INPUT_IS_LIST", False):
            calls.append(func(**data))
        else:
            count = max((len(v) for v in data.values()), default=0)
            for i in range(max(count, 1)):
                comfy.model_management.throw_exception_if_processing_interrupted()
                calls.append(func(**{k: v[i if i < len(v) else -1] for k, v in data.items()}))
        merged = self._merge(cls, calls, node_id)
        self.cache[node_id] = (key, merged)
        self.executed.append(node_id)
        results[node_id] = merged

    def _merge(self, cls: type, calls: list, node_id: str) -> list:
        tuples = []
        for result in calls:
            if isinstance(result, _NodeOutputInternal):
                if result.ui is not None:
                    self.ui.setdefault(node_id, []).append(result.ui)
                result = result.result or ()
            if isinstance(result, dict):
                if "ui" in result:
                    self.ui.setdefault(node_id, []).append(result["ui"])
                result = result.get("result", ())
            tuples.append(tuple(result))
        n = len(cls.RETURN_TYPES)
        for t in tuples:
            if len(t) != n:
                raise TypeError(f"{cls.__name__} returned {len(t)} values for {n} RETURN_TYPES")
        is_list = getattr(cls, "OUTPUT_IS_LIST", (False,) * n)
        merged = []
        for i in range(n):
            if is_list[i]:
                merged.append([x for t in tuples for x in t[i]])
            else:
                merged.append([t[i] for t in tuples])
        return merged
