"""The daemon: builds the layers, connects them, and runs them. It holds no duty logic.

Data flow: scheduler -> PollResult -> latest values + rule engine -> AlertEvents ->
alert journal (console, alert table, duty log) -> listeners (the notification service).
Exporters read the latest values and the alerts at scrape time; the HTTP face gets a
`WebContext` (duty operations, drills, reads), never the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry

from dutyd.agent.config import Settings
from dutyd.agent.ha import HighAvailability
from dutyd.agent.scheduler import PollResult, Scheduler
from dutyd.agent.sdnotify import SystemdNotifier
from dutyd.agent.sysnames import Named, load_named
from dutyd.agent.topology import LearnedTopology, describe
from dutyd.agent.traps import DaemonTrapSink, retarget_traps, start_traps, stop_traps
from dutyd.collectors import COLLECTORS, Collector, CollectorContext
from dutyd.collectors.snmp.trap_listener import TrapListener
from dutyd.core.clock import SYSTEM_CLOCK, Clock, SteadyClock
from dutyd.core.errors import ConfigError, StartupError
from dutyd.core.fdlimit import open_file_limit
from dutyd.core.latest import LatestSamples, TargetStatus
from dutyd.core.loglimit import LogLimiter
from dutyd.core.records import AlertEvent, Sample, labels_of
from dutyd.core.tasks import LoopWatch
from dutyd.duty import rulestate
from dutyd.duty.availability import AvailabilityRecorder
from dutyd.duty.clockwatch import ClockWatch
from dutyd.duty.doorshare import DoorShare
from dutyd.duty.drill import Drills
from dutyd.duty.entries import EntryRegister
from dutyd.duty.equipment import EquipmentRegister
from dutyd.duty.handover import ShiftCheckIn
from dutyd.duty.journal import AlertJournal
from dutyd.duty.logerrors import ServerErrorsRegister
from dutyd.duty.network import NetworkRegister
from dutyd.duty.operations import DutyOperations
from dutyd.duty.reboots import RebootMemory
from dutyd.duty.report import EnvironmentRecorder
from dutyd.duty.retention import Retention
from dutyd.duty.software import SoftwareRegister
from dutyd.exporters.instrumentation import Instrumentation
from dutyd.exporters.prometheus import LatestExporter
from dutyd.notify.service import NotifyService
from dutyd.rules.alerts import Alert
from dutyd.rules.engine import RuleEngine
from dutyd.rules.matchers import compile_matchers
from dutyd.rules.mutes import WAITING_FOR_PARENT
from dutyd.rules.overlays import MaintenanceWindow
from dutyd.rules.packs import effective_rules
from dutyd.storage import (
    FencedOut,
    Storage,
    StorageError,
    StorageUnavailable,
    open_configured,
)
from dutyd.web.api import install_api
from dutyd.web.context import WebContext
from dutyd.web.frontdoor import fit_to_descriptors
from dutyd.web.server import DoorMetrics, HttpServer

log = logging.getLogger("dutyd")

# Resolved alerts stay visible (API, page) this long before they leave memory.
RESOLVED_RETENTION = 15 * 60.0
# While the store refuses writes it is probed this often, doubling up to PROBE_MAX; when it
# is well, its WAL is checkpointed and truncated every CHECKPOINT_EVERY.
PROBE_FIRST = 1.0
PROBE_MAX = 10.0
CHECKPOINT_EVERY = 60.0
# Per-series rule state not fed for this many of the longest poll interval (at least
# STALE_MIN) leaves memory, swept every STALE_SWEEP_EVERY, with expired silences.
STALE_INTERVALS = 5
STALE_MIN = 3600.0
STALE_SWEEP_EVERY = 600.0


class Daemon:
    def __init__(
        self, settings: Settings, config_path: Path | None = None, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        # Every layer gets the steady clock: durations on the monotonic clock, whatever the
        # system clock does (duty/clockwatch.py).
        self.clock = clock = SteadyClock(clock)
        self.registry = CollectorRegistry(auto_describe=False)
        self.metrics = Instrumentation(self.registry, COLLECTORS)
        self.latest = LatestSamples()
        # A flapping target's repeated lines collapse (core/loglimit.py); pages never do.
        self.loglimit = LogLimiter(
            clock.monotonic, lambda kind: self.metrics.log_lines_suppressed.labels(kind).inc()
        )
        # As many threads as polls may be in flight, so a blocking poll never queues for a
        # thread while its timeout runs.
        self.context = CollectorContext(
            ThreadPoolExecutor(settings.scheduler.max_in_flight, thread_name_prefix="poll"),
            self.loglimit,
        )
        self.scheduler = Scheduler(self._on_poll, settings.scheduler.max_in_flight, clock)
        self.engine = _engine_for(settings)
        # `depends_on: auto`: parents learned from the switches' LLDP neighbours.
        self.topology = LearnedTopology(settings.targets)
        self.storage: Storage = open_configured(settings.storage)
        # The daemon's loops and its layers': one that ends other than by a stop stops the
        # daemon with a failure status (`fault`), see `core.tasks`.
        self.loops = LoopWatch(on_end=lambda name, why: self._loop_ended())
        self.ha = HighAvailability(
            lambda: self.settings, self.storage, self.metrics, clock, loops=self.loops
        )
        self.http = HttpServer(
            self.registry,
            self._readiness,
            settings.http.listen,
            settings.http.port,
            web_config_file=settings.http.web_config_file,
            allowed_hosts=[*settings.http.allowed_hosts, *_advertised_hosts(settings)],
            limits=fit_to_descriptors(settings.http.door_limits(), open_file_limit()),
            degraded=self.storage.health.problem,
        )
        self.registry.register(DoorMetrics(self.http))
        self.journal = AlertJournal(
            lambda: self.engine, self.storage, self.metrics, limiter=self.loglimit
        )
        self.operations = DutyOperations(lambda: self.engine, self.storage, self.journal, clock)
        s = settings
        self.notify = NotifyService(
            s.oncall,
            s.escalation,
            s.notify,
            self.storage,
            self.metrics,
            clock=clock,
            generator_url=s.notify.ack_base_url or f"http://{s.http.listen}:{s.http.port}",
            loops=self.loops,
        )
        self.journal.listeners.append(self.notify)
        self._storage_changed = asyncio.Event()
        health = self.storage.health
        health.on_error.append(self.metrics.storage_errors.inc)
        health.on_change.append(self._on_storage_change)
        self.retention = Retention(
            self.storage,
            lambda: self.settings.storage.retention,
            lambda: self.engine,
            clock,
            on_deleted=lambda table, n: self.metrics.retention_deleted.labels(table).inc(n),
            enabled=self.ha.escalating,
        )
        self.ha.connect(
            lambda: self.engine,
            self.journal,
            self.operations,
            self.notify,
            self.scheduler,
            self.latest,
            lambda: self._apply_targets(self.settings),
        )
        self.drills = Drills(self.operations, self.notify, self.storage, clock)
        self.recorder = EnvironmentRecorder(self.storage.environment, clock=clock)
        self.reboots = RebootMemory(self.storage.boot_times)
        self.entries = EntryRegister(
            lambda: self.settings.rooms,
            lambda: {p.name for p in self.settings.oncall.people},
            lambda: self.notify.rota,
            self.operations,
            self.storage,
            clock,
            # In a cluster the doors' changes are shared through the duty log.
            doors=DoorShare(
                self.storage.log,
                settings.cluster.node if self.ha.enabled else "",
                lambda target: self.ha.records(labels_of({"target": target})),
            ),
        )
        # Register lines are written by the active node, fenced by its epoch like its alerts.
        self.availability = AvailabilityRecorder(self.storage, self.ha.fence)
        self.equipment = EquipmentRegister(
            lambda: self.scheduler.collectors, self.storage, clock, fence=self.ha.fence
        )
        self.software = SoftwareRegister(self.storage, clock, self.ha.escalating, self.ha.fence)
        self.log_errors = ServerErrorsRegister(
            self.storage,
            lambda: self.settings.notify.timezone,
            clock,
            self.ha.escalating,
            self.ha.fence,
        )
        self.network = NetworkRegister(
            self.storage,
            lambda: self.settings.notify.timezone,
            clock,
            self.ha.escalating,
            self.ha.fence,
        )
        self.handover = ShiftCheckIn(
            lambda: self.settings.handover, self.notify, self.operations, self.storage, clock
        )
        self.clockwatch = ClockWatch(clock, self.metrics, self.storage.log)
        self.clockwatch.on_step.append(self._clock_moved)
        self.web = WebContext(
            operations=self.operations,
            drills=self.drills,
            entries=self.entries,
            handover=self.handover,
            rooms=lambda: self.settings.rooms,
            notify=self.notify,
            storage=self.storage,
            latest=self.latest,
            server=self.http,
            api_token=lambda: self.settings.api.secret(),
            read_token=lambda: self.settings.api.read_secret(),
            open_loopback_reads=lambda: self.settings.api.open_loopback_reads,
            targets=lambda: self.settings.targets,
            language=lambda: self.settings.notify.language,
            timezone=lambda: self.settings.notify.timezone,
            cluster=self.ha.status,
            topology=lambda: self.topology.view(),
            clock=clock,
        )
        install_api(self.web)
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        # Poll results of a child held back while its parents are polled out of turn.
        self._held: dict[str, list[PollResult]] = {}
        # How far the clock moved the alerts in memory since their rows were last moved.
        self._stored_alerts_move = 0.0
        # Parents polled out of turn because a child's alert waits for their answer.
        self._answering: set[str] = set()
        self._targets = {t.name: t for t in settings.targets}
        self._stopping = asyncio.Event()
        self._ready = False
        self._help: dict[str, str] = {}
        self.traps: TrapListener | None = None  # the SNMP trap listener when configured
        self.registry.register(
            LatestExporter(lambda: self.latest.samples(only_up=True), self._alerts, self._help)
        )

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start everything; a resource that is not to be had (the HTTP port, the database)
        raises `StartupError` naming it, after closing what was already opened."""
        try:
            await self.storage.open()
        except StorageUnavailable as exc:
            # A read-only or full disk: watching without durable state beats not watching.
            if self.settings.storage.when_unwritable == "refuse":
                raise StartupError(
                    f"cannot write the database {self.settings.storage.path}: {_why(exc)} "
                    "(storage.when_unwritable: refuse)"
                ) from None
            try:
                await self.storage.open_in_memory(
                    f"cannot write {self.settings.storage.path}: {_why(exc)}"
                )
            except StorageError as why:  # a file of a newer dutyd, say: not to run on
                raise StartupError(
                    f"cannot open the database {self.settings.storage.path}: {_why(why)}"
                ) from None
        except (OSError, StorageError) as exc:
            raise StartupError(
                f"cannot open the database {self.settings.storage.path}: {_why(exc)} "
                "(set storage.path to a directory dutyd may write)"
            ) from None
        try:
            await self.http.start()
        except OSError as exc:
            await self.storage.close()
            raise StartupError(
                f"cannot listen on {self.settings.http.listen}:{self.settings.http.port}: "
                f"{_why(exc)} (another program has it? set http.port)"
            ) from None
        await self._name_targets()
        # Stored times off the system clock (the last run's steady clock after a step, or a
        # clock that went back): moved onto it; single node only (a cluster's alerts come
        # from the shared store at takeover).
        moved = 0.0 if self.ha.enabled else await self.clockwatch.at_start()
        self.clockwatch.reanchor = not self.ha.enabled
        restored = await rulestate.restore(self.engine, self.storage, self.clock.time(), moved)
        if restored:
            log.info("alerts restored", extra={"fields": {"count": restored}})
        await self.drills.restore()
        await self.reboots.load()
        await self.recorder.start()
        await self.entries.start()
        await self.handover.start()
        await self.equipment.start()
        await self.software.start()
        await self.log_errors.start()
        await self.network.start()
        await self.ha.start()  # in a cluster: join, learn the shard map, contend for the lease
        self._apply_targets(self.settings)
        try:
            self.traps = await start_traps(
                self.settings,
                DaemonTrapSink(self.scheduler, self.latest, self._evaluate, self.metrics),
                self.clock,
            )
        except OSError as exc:
            await self._close_started()
            traps = self.settings.traps
            where = f"{traps.listen}:{traps.port}" if traps is not None else "?"
            why = _why(exc)  # the listener's own message names the address (and privileges)
            if where not in why:
                why = f"cannot listen for SNMP traps on {where}: {why}"
            taken = "another program has it? " if exc.errno == errno.EADDRINUSE else ""
            raise StartupError(f"{why} ({taken}set traps.port)") from None
        # In a cluster the escalation is taken up at takeover (`ha`), not here.
        firing = None if self.ha.enabled else self.operations.list_alerts(["firing"])
        await self.notify.start(firing, moved=moved)
        self._tasks.append(self.loops.start(self.journal.run(), "alert-events"))
        self._tasks.append(self.loops.start(self._tick_loop(), "rule-tick"))
        self._tasks.append(self.loops.start(self._watch_storage(), "storage-watch"))
        self._tasks.append(self.loops.start(self.retention.run(), "retention"))
        if not self.storage.health.durable:
            self.metrics.storage_durable.set(0)
            self.notify.storage_fault(False, self.storage.health.problem() or "")
        await self.storage.log.append(
            self.clock.time(),
            "daemon.start",
            "dutyd",
            "",
            {"targets": len(self.settings.targets)},
        )
        self._ready = True
        log.info(
            "dutyd started",
            extra={
                "fields": {
                    "targets": len(self.settings.targets),
                    "rules": len(self.engine.rules),
                    "metrics": f"{self.http.url}/metrics",
                }
            },
        )

    async def _close_started(self) -> None:
        """Undo a start that failed after the HTTP port: what `start` had opened by then, in
        `stop`'s order, so the process exits with its message and no task or socket left."""
        await self.ha.stop()
        await self.scheduler.stop()
        await self._close_duty_services()
        await self.recorder.stop()
        await self.http.stop()
        await self.context.close()
        await self.storage.close()

    async def _close_duty_services(self) -> None:
        """The drills and the registers with a loop or a task of their own, in order (at stop
        and when a start is undone)."""
        await self.drills.close()
        await self.entries.close()
        await self.handover.close()
        await self.equipment.close()
        await self.software.close()
        await self.log_errors.close()
        await self.network.close()

    async def stop(self) -> None:
        self._ready = False
        writer = self.ha.escalating()  # a standby's alerts are the store's, not its own
        mine = self.ha.records_as_now()  # sharded: not the copies of other nodes' alerts
        epoch = self.ha.fence()
        await self.ha.stop()
        await self.scheduler.stop()
        await stop_traps(self.traps)
        for task in [*self._tasks, *self._background]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._background, return_exceptions=True)
        self._tasks.clear()
        await self.journal.drain()
        await self._close_duty_services()
        await self.availability.close()
        await self.notify.stop()
        with contextlib.suppress(Exception):
            if writer:
                await rulestate.save_all(self.engine, self.storage, mine, epoch)
        with contextlib.suppress(Exception):
            await self.reboots.flush()
        await self.recorder.stop()
        await self.http.stop()
        await self.context.close()
        with contextlib.suppress(Exception):
            # The offset maps this run's stored times onto the system clock at the next start.
            offset = {"clock_offset": round(self.clock.offset(), 3)}
            await self.storage.log.append(self.clock.time(), "daemon.stop", "dutyd", "", offset)
        await self.storage.close()
        log.info("dutyd stopped")

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT, reload on SIGHUP, stop cleanly; tell systemd
        each step when it runs dutyd (`sdnotify`)."""
        systemd = SystemdNotifier()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        loop.add_signal_handler(
            signal.SIGHUP, lambda: asyncio.ensure_future(self._reload_told(systemd))
        )
        await self.start()
        systemd.ready()  # the first polls are scheduled
        watchdog = asyncio.create_task(systemd.keep_watchdog(), name="systemd-watchdog")
        try:
            await self._stopping.wait()
        finally:
            systemd.stopping()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await self.stop()
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)
            systemd.close()

    async def _reload_told(self, systemd: SystemdNotifier) -> None:
        systemd.reloading()
        try:
            await self.reload()
        finally:
            systemd.ready()  # applied or rejected, dutyd runs on (a rejected file is logged)

    def request_stop(self) -> None:
        self._stopping.set()

    @property
    def fault(self) -> str | None:
        """The loops that ended by a fault (None: none did), see `_loop_ended`."""
        return self.loops.problem()

    def _loop_ended(self) -> None:
        """A loop ended by a fault (logged with its traceback by `LoopWatch`): dutyd stops
        cleanly and exits with a failure status, so its supervisor starts it again (systemd's
        `Restart=on-failure`) and, in a cluster, the standby takes over at once (the lease is
        released). Running on without the loop would look healthy and do less."""
        self._stopping.set()

    async def reload(self) -> bool:
        """Re-read the config file; an invalid one keeps the running config and says why."""
        if self.config_path is None:
            log.warning("reload asked, but dutyd runs without a config file")
            return False
        try:
            named = await self._load_named()
            new = named.settings
            _refuse_dropping_every_target(self.settings, new, str(self.config_path))
        except ConfigError as exc:
            self.metrics.config_reloads.labels("rejected").inc()
            log.error("config reload rejected; keeping the running config\n%s", exc.report())
            await self.storage.log.append(
                self.clock.time(),
                "config.reload_rejected",
                "dutyd",
                str(self.config_path),
                {"problems": exc.problems},
            )
            return False
        await self._apply(new)
        await self._remember_names(named)
        self.metrics.config_reloads.labels("applied").inc()
        await self.storage.log.append(
            self.clock.time(),
            "config.reload",
            "dutyd",
            str(self.config_path),
            {"targets": len(new.targets)},
        )
        log.info("config reloaded", extra={"fields": {"targets": len(new.targets)}})
        return True

    async def _load_named(self) -> Named:
        """The config file with its `{sysName}` members named (agent/sysnames.py): what the
        devices tell now, else what they last told (stored), else their address."""
        assert self.config_path is not None
        try:
            remembered = await self.storage.sys_names.load_all()
        except StorageError as exc:
            log.warning("the sysNames devices last told cannot be read: %s", _why(exc))
            remembered = {}
        named = await load_named(self.config_path, remembered)
        for note in named.notes:
            log.warning("target name: %s", note)
        return named

    async def _name_targets(self) -> None:
        """At start: the targets named from their sysName before anything uses a name (the
        restored alerts, the schedule)."""
        if self.config_path is None:
            return
        try:
            named = await self._load_named()
        except ConfigError as exc:
            await self._close_started()
            raise StartupError(f"the configuration is invalid\n{exc.report()}") from None
        if named.settings.targets != self.settings.targets:
            new = self.settings = named.settings
            self.engine = _engine_for(new)
            self.topology = LearnedTopology(new.targets)
            self._targets = {t.name: t for t in new.targets}
        await self._remember_names(named)

    async def _remember_names(self, named: Named) -> None:
        try:
            await self.storage.sys_names.save(named.told)
        except StorageError as exc:
            log.warning("the sysNames devices told cannot be stored: %s", _why(exc))
        for address, old, new in named.renamed:
            log.warning(
                "target renamed: its device tells a new sysName",
                extra={"fields": {"address": address, "was": old, "now": new}},
            )
            await self.storage.log.append(
                self.clock.time(), "target.renamed", "dutyd", address, {"was": old, "now": new}
            )

    async def _apply(self, new: Settings) -> None:
        old_targets = {t.name: t for t in self.settings.targets}
        new_targets = {t.name: t for t in new.targets}
        removed = old_targets.keys() - new_targets.keys()
        if removed:
            # Their alerts end with a notice to those paged, before the new engine adopts.
            for event in self.engine.retire_targets(removed, self.clock.time()):
                self.journal.put(event)
            log.info("targets removed", extra={"fields": {"targets": ",".join(sorted(removed))}})
        for name, cfg in old_targets.items():
            if new_targets.get(name) != cfg:
                await self.scheduler.remove(name)
                self.latest.remove_target(name)
        self.topology = LearnedTopology(new.targets, self.topology)
        if new.rules != self.settings.rules or new.targets != self.settings.targets:
            engine = _engine_for(new)
            # Alerts the new rules no longer evaluate end with a notice (rule removed, or
            # changed so their series is not selected), not silently or never.
            for event in self.engine.retire_unwatched(engine, self.clock.time()):
                self.journal.put(event)
            engine.adopt(self.engine)
            self.engine = engine
        self.engine.set_parents(self.topology.parents())
        old = self.settings
        if (new.http, new.storage, new.cluster, new.traps) != (
            old.http,
            old.storage,
            old.cluster,
            old.traps,
        ):
            log.warning("http, storage, cluster and traps settings take effect at the next restart")
        self.settings = new
        self._targets = {t.name: t for t in new.targets}
        self.notify.apply(new.oncall, new.escalation, new.notify)
        self._apply_targets(new)
        await retarget_traps(self.traps, new)

    def _apply_targets(self, settings: Settings) -> None:
        running = self.scheduler.collectors
        counts: dict[str, int] = {}
        for cfg in settings.targets:
            counts[cfg.kind] = counts.get(cfg.kind, 0) + 1
            if cfg.name in running or not self.ha.owns(cfg.name):
                continue
            collector_cls = COLLECTORS[cfg.kind]
            collector: Collector = collector_cls(cfg, self.context)
            self._help.update(collector.metric_help)
            self.latest.status.setdefault(cfg.name, TargetStatus(cfg.name, cfg.kind))
            self.scheduler.start(collector)
        for kind in COLLECTORS:
            self.metrics.targets.labels(kind).set(counts.get(kind, 0))

    def _readiness(self) -> tuple[bool, str]:
        if self.fault is not None:
            return False, f"stopping: {self.fault}"
        if not self._ready:
            return False, "starting or stopping"
        problem = self.storage.health.problem()
        if problem is not None:
            return False, problem
        if not self.settings.targets:
            return False, "no targets configured: nothing is watched"
        return True, (
            f"ready: {len(self.settings.targets)} targets, {len(self.engine.rules)} rules"
            + self.ha.readiness()
        )

    # -- data path ------------------------------------------------------------------------------

    def _on_poll(self, result: PollResult) -> None:
        if result.ok:
            samples = self.reboots.check(result.samples, self.clock.offset())
            result = dataclasses.replace(result, samples=samples)
        m = self.metrics
        m.polls.labels(result.kind).inc()
        m.poll_duration.labels(result.kind).observe(result.duration)
        m.scheduler_lag.observe(result.lag)
        m.samples_ingested.inc(len(result.samples))
        was_up = self.latest.record_poll(
            result.target,
            result.kind,
            result.samples,
            result.started_at,
            result.duration,
            None if result.ok else (result.reason, result.message),
        )
        self._learn_topology(result)
        fields = {"target": result.target}
        if self.ha.escalating():  # one node writes the outages (an HA standby polls too)
            self.availability.observe(
                result.target,
                result.kind,
                result.started_at,
                result.ok,
                was_up,
                result.reason,
                result.message,
                result.samples,
            )
        if result.ok:
            self.recorder.observe(result.samples)
            self.entries.observe(result.samples)  # door contacts
            collector = self.scheduler.collector(result.target)
            facts = collector.take_facts() if collector is not None else None
            if facts is not None:
                self.equipment.observe(result.target, result.kind, facts)
            if result.kind == "snmp":  # switch ports, for the network status register
                self.network.observe(result.target, result.samples, result.started_at)
            take_accounts = getattr(collector, "take_accounts", None)  # SSH targets
            if take_accounts is not None and (accounts := take_accounts()) is not None:
                self.software.observe(result.target, accounts)
            take_journal = getattr(collector, "take_journal", None)  # SSH targets
            if take_journal is not None and (journal := take_journal()) is not None:
                self.log_errors.observe(result.target, journal)
            if was_up is False and self.loglimit.allow("target recovered", result.target, fields):
                log.info("target recovered", extra={"fields": fields})
        else:
            m.poll_errors.labels(result.kind, result.reason).inc()
            # Log once on the way down, not on every failed poll.
            if was_up is not False and self.loglimit.allow("target down", result.target, fields):
                log.warning(
                    "target down",
                    extra={
                        "fields": {
                            "target": result.target,
                            "reason": result.reason,
                            "detail": result.message,
                        }
                    },
                )
        if result.target in self._held:
            self._held[result.target].append(result)  # behind a parent check: keep the order
        elif not result.ok and was_up is not False and self._parents_of(result.target):
            self._hold_for_parents(result)
        else:
            self._evaluate(result.samples, observed_at=result.started_at + result.duration)

    def _evaluate(
        self, samples: list[Sample], provisional: bool = False, observed_at: float | None = None
    ) -> None:
        """Rule the samples; `provisional` for a trap's (agent/traps.py); `observed_at`: when
        the poll that read them ended (see `RuleEngine.ingest`)."""
        if provisional:
            # A door contact's trap (`traps.maps` to `room_door_open`), authenticated by the
            # listener: the entry register's rules see it at once; the poll it asks for, if
            # the target reads the door too, confirms or clears it as for any trap.
            self.entries.observe(samples)
        t0 = time.perf_counter()
        events = self.engine.ingest(samples, self.clock.time(), provisional, observed_at)
        self.metrics.rule_evaluation.observe(time.perf_counter() - t0)
        for event in events:
            self.journal.put(event)
        self._ask_awaited_parents(events)

    # -- reachability: a child's failure waits for its parents' answer --------------------------

    def _parents_of(self, target: str) -> list[str]:
        cfg = self._targets.get(target)
        return [p for p in self.topology.parents_of(target) if p in self._targets] if cfg else []

    def _learn_topology(self, result: PollResult) -> None:
        """A switch's LLDP neighbours or forwarding table changed: the learned parents of
        `depends_on: auto` targets follow, and each change is a duty log entry (a device
        moved port). A forwarding table refused (too long) is logged, and not learned from."""
        take = getattr(self.scheduler.collector(result.target), "take_forwarding", None)
        got = take() if take is not None and result.ok else None
        forwarding = got[0] if got is not None else None
        if got is not None and got[1]:
            fields = {"target": result.target, "reason": got[1]}
            if self.loglimit.allow("forwarding table not read", result.target, fields):
                log.warning("forwarding table not read", extra={"fields": fields})
        changes = self.topology.observe(result.target, result.samples, result.ok, forwarding)
        if not changes:
            return
        self.engine.set_parents(self.topology.parents())
        for change in changes:
            text = describe(change)
            log.info("topology change", extra={"fields": {"target": change[0], "change": text}})
            link = change[2]
            data = {
                "change": text,
                "parent": link.parent if link else "",
                "port": link.port if link else "",
            }
            task = asyncio.create_task(
                self.storage.log.append(
                    self.clock.time(), "topology.change", "dutyd", change[0], data
                )
            )
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def _hold_for_parents(self, result: PollResult) -> None:
        """A target with parents just failed: poll its parents at once and keep its result
        from the rules until they answered (bounded by their timeouts), as Icinga's
        reachability check does. Whatever the poll phases, the rules then know whether the
        parent is down, so one outage gives one page (the parent's), not one per child."""
        self._held[result.target] = [result]
        task = asyncio.create_task(self._check_parents(result.target), name="parent-check")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _check_parents(self, target: str) -> None:
        parents = self._parents_of(target)
        bound = 2 * max(self._targets[p].timeout for p in parents) + 1.0
        try:
            async with self.clock.timeout(bound):
                await asyncio.gather(*(self._check_parent(p) for p in parents))
        except TimeoutError:
            log.warning(
                "parents did not answer in time",
                extra={"fields": {"target": target, "parents": ",".join(parents)}},
            )
        finally:
            for held in self._held.pop(target, []):
                self._evaluate(held.samples, observed_at=held.started_at + held.duration)

    def _ask_awaited_parents(self, events: list[AlertEvent]) -> None:
        """A child's alert fired while a parent has not answered since the child's trouble
        began (the engine holds its page: `WAITING_FOR_PARENT`): poll those parents out of
        turn, then let the engine page it, or not, on their answer."""
        for event in events:
            if event.notify or not event.muted_reason.startswith(WAITING_FOR_PARENT):
                continue
            for parent in self.engine.awaited_parents(event.fingerprint, self.clock.time()):
                if parent in self._answering or parent not in self._targets:
                    continue
                self._answering.add(parent)
                task = asyncio.create_task(self._answer_children(parent), name="parent-answer")
                self._background.add(task)
                task.add_done_callback(self._background.discard)

    async def _answer_children(self, parent: str) -> None:
        try:
            async with self.clock.timeout(2 * self._targets[parent].timeout + 1.0):
                await self._check_parent(parent)
        except TimeoutError:
            log.warning("parent did not answer in time", extra={"fields": {"target": parent}})
        finally:
            self._answering.discard(parent)
            for event in self.engine.recheck_held(self.clock.time()):
                self.journal.put(event)

    async def _check_parent(self, name: str) -> None:
        """Poll a parent out of turn. A parent another agent polls (shards) is polled once
        from here with a collector of its own: the store has its status only as of that
        agent's last poll and the next exchange, seconds late, and the child's alert must
        know now. Its answer marks the parent up or down for the dependencies here (newer
        than what the store says, see `ha`); its rules and alerts stay with its owner."""
        if await self.scheduler.poll_now(name) is not None:
            return
        cfg = self._targets.get(name)
        if cfg is None or self.ha.owns(name):
            return  # not configured, or ours and just not scheduled yet
        result = await self.scheduler.poll_apart(COLLECTORS[cfg.kind](cfg, self.context))
        status = self.latest.status.setdefault(name, TargetStatus(name, cfg.kind))
        status.up, status.reason, status.message = result.ok, result.reason, result.message
        status.last_poll_at = result.started_at
        self.engine.note_target_up(name, result.ok, result.started_at + result.duration)
        log.info(
            "parent of another shard checked from here",
            extra={"fields": {"target": name, "up": result.ok, "reason": result.reason}},
        )

    async def _tick_loop(self) -> None:
        swept = self.clock.time()
        while True:
            # Wake at the next `for` deadline, so a pending alert fires on time, not up to a
            # second late; and at least every second for everything else time changes.
            deadline = self.engine.next_deadline()
            delay = 1.0 if deadline is None else min(1.0, max(0.005, deadline - self.clock.time()))
            await self.clock.sleep(delay)
            if await self.clockwatch.check() and self.clockwatch.reanchor:
                # The alert rows as moved (`_clock_moved`), so a restart reads them right. The
                # store keeps an outage's first firing against a later `save`: moved first.
                moved = self._stored_alerts_move
                with contextlib.suppress(StorageUnavailable):
                    await self.storage.alerts.shift_moments(moved)
                    self._stored_alerts_move -= moved
                    await self._resync_alerts()
            self.loglimit.flush()
            now = self.clock.time()
            events = self.engine.tick(now)
            for event in events:
                self.journal.put(event)
            self._ask_awaited_parents(events)
            forgotten = self.engine.forget_resolved(now - RESOLVED_RETENTION)
            if now - swept >= STALE_SWEEP_EVERY:
                swept = now
                longest = max((t.interval for t in self.settings.targets), default=0.0)
                self.engine.forget_stale(now, max(STALE_MIN, STALE_INTERVALS * longest))
            if not self.ha.escalating():
                continue  # a standby: the active node writes the rule state
            try:
                epoch = self.ha.fence()
                for fp in forgotten:
                    await self.storage.alerts.delete(fp, epoch)
                await rulestate.save_counts(self.engine, self.storage, epoch)
                await self.reboots.flush()
            except FencedOut as exc:
                self.journal.refused(epoch, exc)  # another node took the lease (logged once)
            except StorageUnavailable:
                pass  # logged once by the store's health; written again when it is back
            except Exception:
                # A full or broken disk must not stop the rules; the duty log says why.
                log.exception("recording rule state failed")

    # -- storage faults -------------------------------------------------------------------------

    def _on_storage_change(self, writable: bool, reason: str) -> None:
        self.metrics.storage_writable.set(1 if writable else 0)
        self.notify.storage_fault(writable, reason)
        self._storage_changed.set()

    async def _watch_storage(self) -> None:
        """While the store refuses writes, probe it with backoff; when it takes them again
        (the held duty log is written by the probe), write the alert rows as they are now
        (the notification service writes its held outbox state itself). Otherwise a
        truncating WAL checkpoint every CHECKPOINT_EVERY keeps the WAL small."""
        delay = PROBE_FIRST
        while True:
            self._storage_changed.clear()
            if not self.storage.health.writable:
                await self.clock.sleep(delay)
                if not await self.storage.probe():
                    delay = min(PROBE_MAX, delay * 2)
                    continue
                delay = PROBE_FIRST
                if self.ha.escalating():
                    with contextlib.suppress(StorageUnavailable):
                        await self._resync_alerts()
                continue
            with contextlib.suppress(TimeoutError):
                async with self.clock.timeout(CHECKPOINT_EVERY):
                    await self._storage_changed.wait()
            if self.storage.health.writable:
                with contextlib.suppress(StorageUnavailable):
                    await self.storage.compact()

    async def _resync_alerts(self) -> None:
        """The alert rows this node records, as they are now (after a fault or a clock step),
        fenced by its epoch in a cluster: a node that lost its place meanwhile writes none."""
        epoch = self.ha.fence()
        try:
            await rulestate.resync_alerts(
                self.engine, self.storage, self.ha.records_as_now(), epoch
            )
        except FencedOut as exc:
            self.journal.refused(epoch, exc)

    def _clock_moved(self, seconds: float) -> None:
        """The clock was re-anchored onto a stepped system clock: every moment kept in
        memory moves by as much, in this event-loop turn (`duty.clockwatch`)."""
        self.engine.shift(seconds)
        self.notify.shift(seconds)
        self._stored_alerts_move += seconds  # written by the tick loop, right after
        for run in self.drills.runs.values():
            run.shift(seconds)

    def _alerts(self) -> list[Alert]:
        return list(self.engine.alerts.values())


def _why(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _refuse_dropping_every_target(old: Settings, new: Settings, source: str) -> None:
    """An emptied or truncated file (`: > dutyd.yaml`) must not silently stop all watching:
    a reload to zero targets needs an explicit `targets: []`."""
    if old.targets and not new.targets and "targets" not in new.model_fields_set:
        raise ConfigError(
            source,
            [
                f"targets: the new file has no targets, and {len(old.targets)} are watched now; "
                "write `targets: []` to stop watching everything"
            ],
        )


def _advertised_hosts(settings: Settings) -> list[str]:
    """The hosts of the URLs this node gives out, which requests then carry as Host: the
    public ack-link URL (a reverse proxy forwards with it) and the cluster address (a
    container's service name, say, which is not its hostname)."""
    urls = (settings.notify.ack_base_url, settings.cluster.address)
    return [host for url in urls if (host := urlsplit(url).hostname)]


def _engine_for(settings: Settings) -> RuleEngine:
    rules = settings.rules
    engine = RuleEngine(effective_rules(rules), rules.flapping)
    # A child's page waits for a parent's answer as long as a parent check does.
    engine.set_parents(
        {t.name: t.configured_parents for t in settings.targets},
        {t.name: 2 * t.timeout + 1.0 for t in settings.targets},
    )
    for m in rules.maintenance:
        wid = f"config:{m.name}"
        engine.add_window(
            MaintenanceWindow(
                wid,
                frozenset(m.targets),
                compile_matchers(m.match),
                m.start.timestamp(),
                m.end.timestamp(),
                m.reason,
                "config",
                m.every,
                m.name,
            )
        )
    return engine
