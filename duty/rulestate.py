"""The rule engine's durable state: alerts, silences, maintenance windows and event counts.

Saved as it changes and restored at start, so a restart keeps every alert's start time and
red-line clock, every silence and window, and the counts of `events:` rules.
"""

from __future__ import annotations

from collections.abc import Callable

from dutyd.core.records import AlertState, Labels, labels_of
from dutyd.rules.alerts import Alert
from dutyd.rules.engine import RuleEngine
from dutyd.rules.matchers import compile_matchers
from dutyd.rules.overlays import MaintenanceWindow, Silence
from dutyd.storage import Storage, StoredAlert

# Ad hoc maintenance windows that ended this long ago still count for red lines after a
# restart (an outage older than that has long crossed its red line).
WINDOW_LOOKBACK = 7 * 86400.0


async def restore(engine: RuleEngine, storage: Storage, now: float, moved: float = 0.0) -> int:
    """Load alerts, overlays and event counts into a fresh engine; returns the alert count.
    `moved`: seconds to add to the stored alerts' moments to have them on this run's clock
    (see `duty.clockwatch`)."""
    restored = [alert_from_row(r) for r in await storage.alerts.load_all()]
    if moved:
        for alert in restored:
            alert.shift(moved)
    engine.restore(restored)
    await load_overlays(engine, storage, now)
    spans = [r.config.events.over for r in engine.rules.values() if r.config.events]
    if spans:
        rows = await storage.rule_events.load(now - max(spans))
        engine.restore_events(
            (rule, labels_of(series), ts, inc, v) for rule, series, ts, inc, v in rows
        )
    return len(restored)


async def load_overlays(engine: RuleEngine, storage: Storage, now: float) -> None:
    """The stored silences and ad hoc windows in place of the engine's (the config's
    scheduled windows stay): at start, and in a cluster to see what the other nodes set."""
    silences = [
        Silence(str(s.id), compile_matchers(s.matchers), s.until, s.actor, s.reason, s.created)
        for s in await storage.overlays.live_silences(now)
    ]
    windows = [
        MaintenanceWindow(
            str(w.id),
            frozenset(w.targets),
            compile_matchers(w.matchers),
            w.start,
            w.end,
            w.reason,
            w.actor,
        )
        for w in await storage.overlays.windows_ending_after(now - WINDOW_LOOKBACK)
    ]
    engine.replace_stored_overlays(silences, windows)


async def save_counts(engine: RuleEngine, storage: Storage, epoch: int | None = None) -> None:
    """Write the `events:` counts taken since the last call (fenced by `epoch`)."""
    rows = engine.take_counted()
    if rows:
        try:
            await storage.rule_events.append(
                [(rule, dict(series), ts, inc, v) for rule, series, ts, inc, v in rows], epoch
            )
        except Exception:
            engine.put_back_counted(rows)  # a full disk loses no increase: written next time
            raise


async def save_all(
    engine: RuleEngine,
    storage: Storage,
    records: Callable[[Labels], bool] | None = None,
    epoch: int | None = None,
) -> None:
    """At a clean stop: every alert this node records (`records`; all by default) as it is
    now (keep_firing_for clocks, values) and the event counts not yet written. A crash loses
    at most the last second of counts. A sharded node also holds copies of the alerts other
    nodes record: writing those back could overwrite a newer row with a copy one sync old.
    Fenced by `epoch`: a node that lost the lease writes nothing."""
    for alert in list(engine.alerts.values()):
        if alert.state is AlertState.INACTIVE:
            continue
        if records is None or records(alert.labels):
            await storage.alerts.save(alert_row(alert), epoch)
    await save_counts(engine, storage, epoch)


async def resync_alerts(
    engine: RuleEngine,
    storage: Storage,
    records: Callable[[Labels], bool] | None = None,
    epoch: int | None = None,
) -> None:
    """After a storage fault: the rows of the alerts this node records as they are now,
    and none left of an alert that ended while the disk refused writes (it would come back
    as firing at the next start). Fenced by `epoch` (a cluster node's)."""
    await save_all(engine, storage, records, epoch)
    for row in await storage.alerts.load_all():
        alert = engine.alerts.get(row.fingerprint)
        gone = alert is None or alert.state is AlertState.INACTIVE
        if gone and (records is None or records(labels_of(row.labels))):
            await storage.alerts.delete(row.fingerprint, epoch)


def alert_row(alert: Alert) -> StoredAlert:
    return StoredAlert(
        alert.fingerprint,
        alert.rule,
        dict(alert.labels),
        alert.severity,
        str(alert.state),
        alert.active_since,
        alert.fired_at,
        alert.resolved_at,
        alert.value,
        alert.summary,
        alert.extra(),
    )


def alert_from_row(row: StoredAlert) -> Alert:
    alert = Alert(
        rule=row.rule,
        labels=tuple(sorted(row.labels.items())),
        severity=row.severity,
        state=AlertState(row.state),
        active_since=row.active_since,
        fired_at=row.fired_at,
        resolved_at=row.resolved_at,
        value=row.value,
        summary=row.summary,
        fingerprint=row.fingerprint,
    )
    alert.load_extra(row.extra)
    return alert
