"""Built-in rule packs shipped as YAML beside this module (`duty.yaml` is on by default)."""

from __future__ import annotations

from functools import cache
from importlib import resources

import yaml
from pydantic import TypeAdapter, ValidationError

from dutyd.rules.config import RuleConfig, RulesConfig, merge_override

_RULE_LIST = TypeAdapter(list[RuleConfig])

# A problem's key path inside the `rules:` section, and what is wrong there.
Problem = tuple[tuple[str | int, ...], str]


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


def check_overrides(config: RulesConfig) -> list[Problem]:
    """Each `overrides` entry must name a rule of the configured packs and, applied to it,
    still make a valid rule. Here rather than in `RulesConfig`'s validator because it needs the
    packs, and the packs are built from `rules.config`: the config loader calls it.
    Unknown pack names are skipped (the loader reports them)."""
    known = set(available())
    pack_rules: dict[str, RuleConfig] = {}
    for pack in config.packs:
        if pack in known:
            pack_rules.update({r.name: r for r in load_pack(pack)})
    problems: list[Problem] = []
    for name, changes in config.overrides.items():
        base = pack_rules.get(name)
        if base is None:
            problems.append((("overrides", name), "no rule of that name in the packs"))
            continue
        try:
            merge_override(base, changes)
        except ValidationError as exc:
            for err in exc.errors():
                loc = ("overrides", name, *err["loc"])
                problems.append((loc, err["msg"].removeprefix("Value error, ")))
        except ValueError as exc:
            # merge_override's own refusal (renaming the rule).
            problems.append((("overrides", name, "name"), str(exc)))
    return problems
