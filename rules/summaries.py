"""The texts of an alert, in each language: its rule's summary (or, once resolved, its resolve
notice) and description filled with the alert's labels, value, threshold and duration.

The words a rule's template does not carry (the threshold, "still held until back within",
"back within", "(all targets)") are rendered here per language, so a Chinese page reads
"超出 18..26", never "outside 18..26".
"""

from __future__ import annotations

from dutyd.core.configtypes import format_duration
from dutyd.core.records import AlertState
from dutyd.rules.alerts import Alert
from dutyd.rules.compiled import CompiledRule
from dutyd.rules.config import LANGUAGES, Condition, Localized
from dutyd.rules.template import render

DEFAULT_RESOLVED = Localized(
    en="{rule} on {target} {recovered} after {duration}",
    zh="{rule}（{target}）已{recovered}，历时 {duration}",
)

_ALL_TARGETS = {"en": "(all targets)", "zh": "（全部设备）"}


def _n(x: float, scale: float = 1.0) -> str:
    return f"{round(x * scale, 9):g}"


# What a resolve calls the worst value of the outage: its peak, or for an excursion below the
# range its lowest value (a humidity that fell to 39.8 %RH did not "peak" there).
_PEAK_WORDS = {"en": ("peak", "lowest"), "zh": ("峰值", "最低")}


def peak_word(rule: CompiledRule, alert: Alert, language: str) -> str:
    c, peak = rule.config.condition, alert.peak
    low = c is not None and (
        c.below is not None or (c.outside is not None and peak is not None and peak < c.outside[0])
    )
    return _PEAK_WORDS.get(language, _PEAK_WORDS["en"])[1 if low else 0]


def describe(c: Condition, language: str, scale: float = 1.0) -> str:
    """The condition as people read it in `language` (see `CONDITION_WORDS`)."""
    return c.describe(language, scale)


def threshold(rule: CompiledRule, language: str = "en", total: int = 0, scale: float = 1.0) -> str:
    """The rule's threshold in `language`; `scale` 100 gives a ratio's figures as percent."""
    cfg = rule.config
    if cfg.events is not None:
        over, n = format_duration(cfg.events.over, language), cfg.events.more_than
        text = f"{over}内超过 {n} 次" if language == "zh" else cfg.threshold()
    else:
        assert cfg.condition is not None
        text = describe(cfg.condition, language, scale)
    across = cfg.across
    if across is None:
        return text
    if language == "zh":
        mode = {"any": "任一", "all": "全部", "at_least": f"至少 {across.n} 个"}[across.mode]
        return f"{total} 个序列中{mode}{text}"
    mode = {"any": "any", "all": "all", "at_least": f"at least {across.n}"}[across.mode]
    return f"{text} on {mode} of {total} series"


def held(rule: CompiledRule, alert: Alert, language: str, scale: float = 1.0) -> str:
    """For an active alert whose value reads as inside the limits, what hysteresis waits for
    ("" when the value is past the threshold): 40.1 %RH is not outside 40..60, it is still
    held until back within 41..59. `scale` as for `threshold`."""
    cfg, c, value = rule.config, rule.config.condition, alert.value
    if (
        alert.state not in (AlertState.PENDING, AlertState.FIRING)
        or c is None
        or value is None
        or c.holds(value)
    ):
        return ""
    low, high = cfg.clear_above, cfg.clear_below
    zh = language == "zh"
    if low is not None and high is not None:
        span = f"{_n(low, scale)}..{_n(high, scale)}"
        return f"尚未回到 {span}" if zh else f"still held until back within {span}"
    if high is not None:
        high_text = _n(high, scale)
        return f"尚未回落至低于 {high_text}" if zh else f"still held until below {high_text}"
    if low is not None:
        low_text = _n(low, scale)
        return f"尚未回升至高于 {low_text}" if zh else f"still held until above {low_text}"
    return ""


def recovered(rule: CompiledRule, language: str, scale: float = 1.0) -> str:
    """What a resolve says came back: `back within 18..26` / `恢复到 18..26`. `scale` as
    for `threshold`."""
    cfg, c = rule.config, rule.config.condition
    zh = language == "zh"

    def fig(x: float) -> str:
        return _n(x, scale)

    if cfg.events is not None:
        n = cfg.events.more_than
        return f"回落到不超过 {n} 次" if zh else f"back to at most {n}"
    assert c is not None
    if c.above is not None:
        return f"回落至不高于 {fig(c.above)}" if zh else f"back to {fig(c.above)} or below"
    if c.below is not None:
        return f"回升至不低于 {fig(c.below)}" if zh else f"back to {fig(c.below)} or above"
    if c.outside is not None:
        span = f"{fig(c.outside[0])}..{fig(c.outside[1])}"
        return f"恢复到 {span}" if zh else f"back within {span}"
    if c.inside is not None:
        span = f"{fig(c.inside[0])}..{fig(c.inside[1])}"
        return f"离开 {span}" if zh else f"back outside {span}"
    if c.equals is not None:
        return f"不再等于 {fig(c.equals)}" if zh else f"no longer {fig(c.equals)}"
    if c.changed:
        return "恢复稳定" if zh else "steady again"
    return "恢复上报" if zh else "reporting again"


def _values(
    rule: CompiledRule, alert: Alert, now: float, language: str, keep_duration: bool
) -> dict[str, object]:
    values: dict[str, object] = dict(alert.labels)
    total = rule.group_size(alert)
    cfg = rule.config
    value, peak = alert.value, alert.peak
    values.update(
        rule=rule.name,
        value=value if value is not None else "n/a",
        threshold=held(rule, alert, language) or threshold(rule, language, total),
        # The same for a rule whose value the text shows as a percent ({value_percent}):
        # "98 % full (above 85 %)", never "(above 0.85)" beside a percentage.
        threshold_percent=(
            held(rule, alert, language, 100.0) or threshold(rule, language, total, 100.0)
        ),
        recovered=recovered(rule, language),
        recovered_percent=recovered(rule, language, 100.0),
        target=alert.label("target") or _ALL_TARGETS.get(language, _ALL_TARGETS["en"]),
        severity=cfg.severity,
        red_line=format_duration(cfg.red_line, language) if cfg.red_line else "",
        reference=cfg.reference.get(language),
        total=total,
        # The value read as people say it: 26h3m for seconds, 87 for a 0..1 ratio.
        value_duration=format_duration(value, language) if value is not None else "n/a",
        value_percent=f"{value * 100:.0f}" if value is not None else "n/a",
        peak=peak if peak is not None else (value if value is not None else "n/a"),
        peak_percent=f"{peak * 100:.0f}" if peak is not None else "n/a",
        peak_duration=format_duration(peak, language) if peak is not None else "n/a",
        peak_word=peak_word(rule, alert, language),
    )
    if not keep_duration:
        values["duration"] = format_duration(alert.duration(now), language)
    values["for"] = format_duration(cfg.for_, language)
    return values


def render_text(
    rule: CompiledRule,
    template: Localized,
    alert: Alert,
    now: float,
    language: str = "en",
    keep_duration: bool = False,
) -> str:
    """`template` in `language`, filled for `alert` at `now`. With `keep_duration` the
    `{duration}` placeholder stays, to be filled when the text is shown or sent."""
    return render(template.get(language), _values(rule, alert, now, language, keep_duration))


def summary_template(rule: CompiledRule, alert: Alert) -> Localized:
    """The firing summary, or for a resolved alert its resolve notice."""
    if alert.state is AlertState.RESOLVED:
        return rule.config.resolved or DEFAULT_RESOLVED
    return rule.config.summary


def summaries(
    rule: CompiledRule, alert: Alert, now: float, keep_duration: bool = False
) -> tuple[tuple[str, str], ...]:
    """The summary in every language, (language, text); see `render_text` for keep_duration."""
    template = summary_template(rule, alert)
    return tuple(
        (lang, render_text(rule, template, alert, now, lang, keep_duration)) for lang in LANGUAGES
    )


def unwatched_summaries(target: str, rule: str, how: str) -> dict[str, str]:
    """What a firing alert says when a reload removed its rule ("removed") or changed it so
    that its series is no longer selected ("changed")."""
    if how == "removed":
        return {
            "en": f"No longer watched: rule {rule} removed by reload ({target}: {rule} ends)",
            "zh": f"不再监控：规则 {rule} 已在重新加载配置时删除（{target}：告警结束）",
        }
    return {
        "en": f"No longer watched: rule {rule} changed by reload and no longer selects "
        f"{target} ({rule} ends)",
        "zh": f"不再监控：规则 {rule} 已在重新加载配置时修改，不再匹配 {target}（告警结束）",
    }


def retired_summaries(target: str, rule: str) -> dict[str, str]:
    """What a firing alert says when its target leaves the configuration."""
    return {
        "en": f"No longer watched: {target} was removed from the configuration ({rule} ends)",
        "zh": f"不再监控：{target} 已从配置中移除（{rule} 告警结束）",
    }
