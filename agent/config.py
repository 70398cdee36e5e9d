"""dutyd.yaml: the daemon's configuration, validated as a whole with every problem reported.

The file is YAML; environment variables override any setting (`DUTYD_HTTP__PORT=9000`,
`DUTYD_TARGETS='[...]'`). Unknown keys are errors. `load_config` raises `ConfigError` listing
each problem as `key.path[3].name: what is wrong (line N)` (prefixed with an included file's
name for a problem written there). `include:`, `defaults:` and target groups (`addresses:`) are
undone first by `configsources.assemble`.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from dutyd.agent.configsources import Assembled, Origins, assemble
from dutyd.cluster.config import ClusterConfig
from dutyd.collectors import COLLECTORS
from dutyd.collectors.base import AUTO_PARENTS, TargetConfig
from dutyd.collectors.snmp.trap_config import TrapsConfig, target_problems
from dutyd.core.configtypes import StrictModel
from dutyd.core.errors import ConfigError
from dutyd.core.redact import redact_address
from dutyd.duty.config import HandoverConfig, RoomList
from dutyd.notify.config import (
    EscalationConfig,
    NotifyConfig,
    OncallConfig,
    duty_references,
)
from dutyd.rules.config import RulesConfig
from dutyd.rules.packs import available as available_packs
from dutyd.rules.packs import check_overrides
from dutyd.storage.config import StorageConfig
from dutyd.web.config import ApiConfig, HttpConfig

# libyaml's safe loader when PyYAML has it (its wheels do): the pure-Python one takes ~40 MiB
# of short-lived objects for a 1,000-target file, and the process keeps that memory.
SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Samples the daemon itself produces for every target, whatever its kind.
BUILTIN_METRICS = frozenset({"target_up"})

if len(COLLECTORS) > 1:
    TargetUnion: Any = Annotated[
        Union[tuple(c.config_model for c in COLLECTORS.values())],  # noqa: UP007
        Field(discriminator="kind"),
    ]
elif COLLECTORS:
    TargetUnion = next(iter(COLLECTORS.values())).config_model
else:
    TargetUnion = TargetConfig


class LogConfig(StrictModel):
    format: Literal["text", "json"] = "text"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class SchedulerConfig(StrictModel):
    # Polls in flight at once across all targets; a slow target holds one slot until its timeout.
    max_in_flight: int = Field(default=256, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DUTYD_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    targets: list[TargetUnion] = Field(default_factory=list)  # type: ignore[valid-type]
    rules: RulesConfig = Field(default_factory=RulesConfig)
    oncall: OncallConfig = Field(default_factory=OncallConfig)
    escalation: EscalationConfig = Field(default_factory=EscalationConfig)
    notify: NotifyConfig = Field(default_factory=NotifyConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    # The SNMP trap/inform listener (collectors/snmp/trap_config.py); off when absent.
    traps: TrapsConfig | None = None
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    # The machine rooms whose entries are registered (duty/config.py).
    rooms: RoomList = Field(default_factory=list)
    handover: HandoverConfig = Field(default_factory=HandoverConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the file; no .env or secrets-dir magic. DUTYD_TARGETS
        # is read by `_env_targets` (expanded and defaulted like the file's targets).
        return (_WithoutTargets(settings_cls, env_settings), init_settings)


class _WithoutTargets(PydanticBaseSettingsSource):
    """The environment's settings but `targets`, which reach `Settings` assembled."""

    def __init__(self, settings_cls: type[BaseSettings], env: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self.env = env

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values = self.env()  # a variable that is not JSON raises here, as before
        values.pop("targets", None)
        return values


def _env_targets() -> tuple[str, Any] | None:
    """DUTYD_TARGETS (any case, as pydantic-settings reads it), parsed: where it came from
    and the entries. Not JSON: None, and the environment source reports it."""
    for name, value in os.environ.items():
        if name.upper() == "DUTYD_TARGETS":
            try:
                return f"environment variable {name}", json.loads(value)
            except ValueError:
                return None
    return None


# ---------------------------------------------------------------------------------------------
# Cross-references, checked on the raw data so that they are reported together with type errors.

Loc = tuple[str | int, ...]
# A reference to a target no entry names. While a `{sysName}` member has no name yet it may be
# the name that device will tell: then a note, not a problem (agent/sysnames.py).
UNKNOWN_TARGET = "unknown target "


def _items(value: Any) -> list[Any]:
    """A list from the raw data, or nothing: a wrong type there is already a field error."""
    return value if isinstance(value, list) else []


def _strings(value: Any) -> list[tuple[int, str]]:
    # Non-string entries are field errors already; they must not crash the cross-check
    # (an unhashable dict or list would, as a set/dict lookup).
    return [(j, v) for j, v in enumerate(_items(value)) if isinstance(v, str)]


def _known_metrics(raw_targets: list[Any], validated: Iterable[Any] | None = None) -> set[str]:
    """Sample names the configured targets produce; from the validated targets when there
    are (validating a thousand targets a second time is most of a big file's load time)."""
    known = set(BUILTIN_METRICS)
    if validated is not None:
        for cfg in validated:
            known.update(COLLECTORS[cfg.kind].emits(cfg))
        return known
    for raw in raw_targets:
        if not isinstance(raw, Mapping):
            continue
        collector = COLLECTORS.get(str(raw.get("kind")))
        if collector is None:
            continue
        try:
            cfg = collector.config_model.model_validate(raw)
        except ValidationError:
            known.update(collector.metric_help)
            continue
        known.update(collector.emits(cfg))
    return known


def _override_problems(
    rules: Mapping[str, Any], validated: RulesConfig | None
) -> list[tuple[Loc, str]]:
    """`rules.overrides` checked against the packs they change (`rules.packs.check_overrides`)."""
    if validated is None:
        # Elsewhere the file has problems: the overrides are still checked against their packs,
        # so that they are reported together; only the two keys they depend on are validated.
        try:
            validated = RulesConfig.model_validate(
                {key: rules[key] for key in ("packs", "overrides") if key in rules}
            )
        except ValidationError:
            return []  # Settings' validation reports what is wrong with those two keys.
    return [(("rules", *loc), msg) for loc, msg in check_overrides(validated)]


def cross_check(
    data: Mapping[str, Any],
    validated_targets: Iterable[Any] | None = None,
    validated_rules: RulesConfig | None = None,
    where: Callable[[Loc], str] | None = None,
) -> list[tuple[Loc, str]]:
    """Every cross-reference problem with its key path, from the data as written (so it is
    reported with the type errors); `validated_targets` and `validated_rules` when the whole
    file validated; `where` names a key path as written (an included file's, a group's)."""
    where = where or format_loc
    problems: list[tuple[Loc, str]] = duty_references(data)
    raw_targets = _items(data.get("targets"))
    names: dict[str, int] = {}
    for i, raw in enumerate(raw_targets):
        if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str):
            continue
        name = raw["name"]
        if name in names:
            problems.append(
                (
                    ("targets", i, "name"),
                    f"duplicate target name {name!r} (first at {where(('targets', names[name]))})",
                )
            )
        else:
            names[name] = i
    for i, raw in enumerate(raw_targets):
        if not isinstance(raw, Mapping):
            continue
        for j, parent in _strings(raw.get("depends_on")):
            if parent not in names and parent != AUTO_PARENTS:
                problems.append((("targets", i, "depends_on", j), f"{UNKNOWN_TARGET}{parent!r}"))
    problems += target_problems(data.get("traps"), raw_targets)
    rules = data.get("rules") or {}
    if not isinstance(rules, Mapping):
        return problems
    for j, pack in _strings(rules.get("packs")):
        if pack not in available_packs():
            problems.append(
                (
                    ("rules", "packs", j),
                    f"unknown rule pack {pack!r}; available: {', '.join(available_packs())}",
                )
            )
    problems += _override_problems(rules, validated_rules)
    known = _known_metrics(raw_targets, validated_targets)
    for i, rule in enumerate(_items(rules.get("custom"))):
        if not isinstance(rule, Mapping):
            continue
        metric = rule.get("metric")
        if isinstance(metric, str) and metric not in known:
            hint = difflib.get_close_matches(metric, known, n=1)
            problems.append(
                (
                    ("rules", "custom", i, "metric"),
                    f"unknown metric {metric!r}: no configured target produces it"
                    + (f" (did you mean {hint[0]!r}?)" if hint else ""),
                )
            )
        for key in ("targets", "depends_on"):
            for j, target in _strings(rule.get(key)):
                if target not in names:
                    problems.append((("rules", "custom", i, key, j), f"{UNKNOWN_TARGET}{target!r}"))
    for i, window in enumerate(_items(rules.get("maintenance"))):
        if not isinstance(window, Mapping):
            continue
        for j, target in _strings(window.get("targets")):
            if target not in names:
                problems.append(
                    (("rules", "maintenance", i, "targets", j), f"{UNKNOWN_TARGET}{target!r}")
                )
    return problems


# ---------------------------------------------------------------------------------------------
# Line numbers: walk the YAML node tree once and remember where each key path starts.


def yaml_lines(text: str) -> dict[Loc, int]:
    lines: dict[Loc, int] = {}
    try:
        root = yaml.compose(text, Loader=SAFE_LOADER)
    except yaml.YAMLError:
        return lines

    def walk(node: yaml.Node, loc: Loc) -> None:
        lines[loc] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = key_node.value
                lines[(*loc, key)] = key_node.start_mark.line + 1
                walk(value_node, (*loc, key))
                lines[(*loc, key)] = key_node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*loc, i))

    if root is not None:
        walk(root, ())
    return lines


def format_loc(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


_UNION_TAGS = frozenset(COLLECTORS)
_VALUE_ERROR = re.compile(r"^(Value error|Assertion failed), ")


def _clean_loc(loc: tuple[str | int, ...]) -> Loc:
    """Drop the discriminator tag pydantic inserts after a list index (`targets.3.modbus.x`)."""
    out: list[str | int] = []
    for i, part in enumerate(loc):
        if (
            i > 0
            and isinstance(loc[i - 1], int)
            and part in _UNION_TAGS
            and out
            and out[0] == "targets"
        ):
            continue
        if isinstance(part, str) and part.startswith(("function-after[", "function-before[")):
            continue
        out.append(part)
    return tuple(out)


# Keys whose value may be a secret: an error there never echoes the value (a numeric
# `password: 1234` or `community: 12345` is a type error that would otherwise print it).
_SECRET_KEY = re.compile(r"pass|secret|community|token|key|auth|cred|header", re.IGNORECASE)


# Keys whose value is (or holds) a URL: it may carry a password or a token, in its user info,
# path or query, or (apprise: tgram://<bot token>/...) where a host would be.
_URL_KEY = re.compile(r"url|uri|dsn|address|endpoint", re.IGNORECASE)


def _shown(err: Mapping[str, Any], loc: Loc) -> str:
    """The offending value as an error may show it: never a secret, whatever its type."""
    value = err["input"]
    if any(isinstance(part, str) and _SECRET_KEY.search(part) for part in loc):
        return "<hidden>"
    if isinstance(value, Mapping | list | tuple | set):
        # A wrong-typed value may be anything, a secret in a list included: only its type.
        return "a mapping" if isinstance(value, Mapping) else "a list"
    if any(isinstance(part, str) and _URL_KEY.search(part) for part in loc):
        if not isinstance(value, str):
            return "<hidden>"
        if loc[-1] == "address":  # a target's address: its host and path help
            return repr(redact_address(value))
        scheme, sep, _ = value.partition("://")
        return repr(f"{scheme}://…") if sep else "<hidden>"
    return repr(value)


def _message(err: Mapping[str, Any], loc: Loc, data: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        model_keys = _allowed_keys(loc[:-1], data)
        hint = difflib.get_close_matches(str(loc[-1]), model_keys, n=1) if model_keys else []
        msg = "unknown key"
        if hint:
            msg += f" (did you mean {hint[0]!r}?)"
        return msg
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_invalid":
        tag = err.get("ctx", {}).get("tag", "")
        return f"unknown target kind {tag!r}; known kinds: {', '.join(sorted(COLLECTORS))}"
    if kind == "union_tag_not_found":
        return f"'kind' is missing; known kinds: {', '.join(sorted(COLLECTORS))}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        word = {
            "greater_than": "greater than",
            "greater_than_equal": "at least",
            "less_than": "less than",
            "less_than_equal": "at most",
        }[kind]
        bound = next(iter(err.get("ctx", {}).values()), "")
        return f"must be {word} {bound} (got {_shown(err, loc)})"
    msg = _VALUE_ERROR.sub("", err["msg"])
    msg = _lower_first(msg)
    if kind.endswith("_type") or kind.endswith("_parsing"):
        msg += f" (got {_shown(err, loc)})"
    return msg


def _lower_first(msg: str) -> str:
    """pydantic's "Input should be ..." reads as "input should be ..." after the key path, but
    an acronym or a name keeps its case ("SNMPv3 uses ...", "TCP port ...")."""
    if msg[:1].isupper() and not msg[1:2].isupper():
        return msg[:1].lower() + msg[1:]
    return msg


def _lookup(data: Any, loc: Loc) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _allowed_keys(loc: Loc, data: Any) -> list[str]:
    """Field names of the model at `loc`, for 'did you mean' hints."""
    model: Any = Settings
    for part in loc:
        if isinstance(part, int):
            continue
        if model is Settings and part == "targets":
            kind = _lookup(data, (*loc[: loc.index(part) + 2], "kind"))
            collector = COLLECTORS.get(str(kind))
            model = collector.config_model if collector else TargetConfig
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        inner = getattr(ann, "__args__", None)
        candidates = [ann, *(inner or ())]
        model = next((c for c in candidates if hasattr(c, "model_fields")), None)
        if model is None:
            return []
    fields = getattr(model, "model_fields", {})
    return [f.alias or name for name, f in fields.items()]


def _line(loc: Loc, lines: Mapping[Loc, int]) -> int:
    probe = loc
    while probe not in lines and probe:
        probe = probe[:-1]
    return lines.get(probe, 0)


class _Reporter:
    """Problems put where they were written: the file (named when it is not the main one),
    its key path and its line; a problem of a group's or a default's is reported once."""

    def __init__(self, origins: Origins, texts: Mapping[str, str], with_lines: bool) -> None:
        self.origins = origins
        self.texts = texts
        self.with_lines = with_lines
        self._lines: dict[str, dict[Loc, int]] = {}

    def lines(self, path: str) -> Mapping[Loc, int]:
        if path not in self._lines:
            text = self.texts.get(path, "")
            self._lines[path] = yaml_lines(text) if text and self.with_lines else {}
        return self._lines[path]

    def name(self, loc: Loc) -> str:
        path, written = self.origins.resolve(loc)
        prefix = "" if path == self.origins.main else f"{path}: "
        return prefix + format_loc(written)

    def written(self, path: str, loc: Loc, msg: str) -> tuple[bool, str, int, str]:
        line = _line(loc, self.lines(path)) if loc else 0
        where = f" (line {line})" if line else ""
        text = f"{format_loc(loc)}: {msg}{where}" if loc else msg
        main = path == self.origins.main
        return (not main, path, line, text if main else f"{path}: {text}")

    def found(self, loc: Loc, msg: str) -> tuple[bool, str, int, str]:
        return self.written(*self.origins.resolve(loc), msg)


def parse_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.load(text, Loader=SAFE_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [f"not valid YAML: {problem}{where}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            source, ["the top level must be a mapping of sections (targets, rules, ...)"]
        )
    return data


def validate(
    data: dict[str, Any],
    source: str,
    text: str = "",
    assembled: Assembled | None = None,
    notes: list[str] | None = None,
) -> Settings:
    """The settings, or `ConfigError` naming every problem; `notes` gets what a person should
    know that does not stop the config (placed as problems are)."""
    if assembled is None:
        assembled = assemble(data, source, text, env_targets=_env_targets())
    data = assembled.data
    found: list[tuple[Loc, str]] = []
    settings: Settings | None = None
    bad_keys = [k for k in data if not isinstance(k, str)]
    if bad_keys:
        # `Settings(**data)` would die on a TypeError; YAML allows `1:` or `null:` as a key.
        raise ConfigError(
            source, [f"{k!r}: a top-level key must be a section name" for k in bad_keys]
        )
    try:
        settings = Settings(**data)
    except SettingsError as exc:
        # A DUTYD_* variable that is not valid JSON; its value may be a secret, so not shown.
        field = re.search(r'field "([^"]+)"', str(exc))
        var = f"DUTYD_{field.group(1).upper()}" if field else "a DUTYD_* variable"
        raise ConfigError(
            source, [f"environment variable {var}: not valid JSON for this setting"]
        ) from None
    except ValidationError as exc:
        for err in exc.errors():
            loc = _clean_loc(err["loc"])
            if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
                loc = (*loc, "kind")
            found.append((loc, _message(err, loc, data)))
    targets = settings.targets if settings is not None else None
    validated_rules = settings.rules if settings is not None else None
    # Line numbers only when there is something to report: composing the YAML a second
    # time costs a large file's load time and memory.
    lines_known = bool(found) or bool(assembled.problems)
    reporter = _Reporter(assembled.origins, assembled.texts, lines_known)
    found += cross_check(data, targets, validated_rules, reporter.name)
    noted = list(assembled.notes)
    _excuse_waiting_names(data, assembled, found, noted)
    lines_known = lines_known or bool(found) or bool(noted)
    reporter.with_lines = lines_known
    if (
        not found
        and not assembled.problems
        and settings is not None
        and _overridden_from_environment()
    ):
        # A DUTYD_* variable may name what the file does not have: check what will run.
        dumped = settings.model_dump(by_alias=True, mode="python")
        found += cross_check(dumped, targets, validated_rules, reporter.name)
        _excuse_waiting_names(dumped, assembled, found, noted)
    if notes is not None:
        notes += [p[-1] for p in sorted({reporter.written(*note) for note in noted})]
    if found or assembled.problems:
        problems = {reporter.found(loc, msg) for loc, msg in found}
        problems |= {reporter.written(*problem) for problem in assembled.problems}
        raise ConfigError(source, [p[-1] for p in sorted(problems)])
    assert settings is not None
    return settings


def _excuse_waiting_names(
    data: Mapping[str, Any],
    assembled: Assembled,
    found: list[tuple[Loc, str]],
    noted: list[tuple[str, Loc, str]],
) -> None:
    """References to a target no entry names that a `{sysName}` member may yet be called
    (it has not told its name), or that devices tell but none may have (two tell it), move
    from the problems to the notes: a device must not stop dutyd from starting."""
    unnamed = [m.address for m in assembled.named if m.told is None]
    waiting = ", ".join(unnamed[:3]) + (", ..." if len(unnamed) > 3 else "")
    for loc, msg in [p for p in found if p[1].startswith(UNKNOWN_TARGET)]:
        if _lookup(data, loc) in assembled.contested:
            why = "more than one device tells it: each is named by its address until they differ"
        elif unnamed:
            why = f"not named from sysName yet: {waiting}; the reference holds once one is"
        else:
            continue
        found.remove((loc, msg))
        noted.append((*assembled.origins.resolve(loc), f"{msg} ({why})"))


def _overridden_from_environment() -> bool:
    return any(name.upper().startswith("DUTYD_") for name in os.environ)


def load_config(
    path: str | Path, sys_names: Mapping[str, str] | None = None, notes: list[str] | None = None
) -> Settings:
    """Read, parse and validate a config file; `ConfigError` names every problem.
    `sys_names`: the sysNames of `{sysName}` members by address (agent/sysnames.py reads
    them; without, those are named by their address); `notes` gets the notes."""
    data, text, assembled = read_config(path, sys_names)
    return validate(data, str(path), text, assembled, notes)


def read_config(
    path: str | Path, sys_names: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], str, Assembled]:
    """A config file read and assembled (includes, defaults, groups), not validated yet."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, [f"cannot read the file: {exc.strerror}"]) from None
    data = parse_yaml(text, source)
    # Includes are read here, so a reload (which loads the file again) re-reads them.
    assembled = assemble(
        data, source, text, Path(path).parent, parse_yaml, _env_targets(), sys_names
    )
    return data, text, assembled


def load_from_dict(data: dict[str, Any], source: str = "<config>") -> Settings:
    return validate(data, source)
