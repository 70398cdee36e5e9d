"""Built-in rule packs shipped as YAML beside this module (`duty.yaml` is on by default)."""

from __future__ import annotations

from functools import cache
from importlib import resources

import yaml
from pydantic import TypeAdapter

from dutyd.rules.config import RuleConfig, RulesConfig, merge_override

_RULE_LIST = TypeAdapter(list[RuleConfig])


def available() -> list[str]:
    return sorted(
        p.name.removesuffix(".yaml")
        for p in resources.files(__package__).iterdir()
        if p.name.endswith(".yaml")
    )


@cache
def load_pack(name: str) -> tuple[RuleConfig, ...]:
    text = resources.files(__package__).joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    return tuple(_RULE_LIST.validate_python(data.get("rules", [])))


def effective_rules(config: RulesConfig) -> list[RuleConfig]:
    """Pack rules in pack order with their `overrides`, minus `disable`, with custom rules
    replacing same-named ones."""
    rules: dict[str, RuleConfig] = {}
    for pack in config.packs:
        for rule in load_pack(pack):
            rules[rule.name] = rule
    for name, changes in config.overrides.items():
        if name in rules:
            rules[name] = merge_override(rules[name], changes)
    for name in config.disable:
        rules.pop(name, None)
    for rule in config.custom:
        rules[rule.name] = rule
    return list(rules.values())
