"""Benchmark: the rule engine with the duty pack over 100,000 series.

    python bench/bench_rules.py [--series 100000] [--rounds 5]

Prints rule evaluations per second (one evaluation = one rule tested against one selected
sample), CPU microseconds per sample ingested, the duration of one clock tick, and the latency
from the sample that completes a `for` to its alert event (target: under 10 ms), with 1 % of
the series holding pending or firing alerts.

The series mix is a machine room's: per target `target_up`; per server file systems and
backups; per switch port `if_oper_up` (10 % uplinks); room sensors. Values keep the duty rules
except where the latency test breaks them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dutyd.core.records import Sample
from dutyd.rules.engine import RuleEngine
from dutyd.rules.packs import load_pack


def series(n: int) -> list[tuple[str, dict[str, str], float]]:
    """(metric, labels, a value that keeps the duty rules) for n series."""
    out: list[tuple[str, dict[str, str], float]] = []
    i = 0
    while len(out) < n:
        t = f"host{i:05d}"
        kind = ("ssh", "snmp", "modbus", "http")[i % 4]
        role = {"snmp": "network", "http": "application"}.get(kind, "")
        base = {"target": t, "kind": kind, "site": f"s{i % 7}", **({"role": role} if role else {})}
        out.append(("target_up", base, 1.0))
        if kind == "ssh":
            for m in ("/", "/var", "/data", "/home", "/boot", "/tmp"):
                out.append(("node_filesystem_used_ratio", {**base, "mount": m}, 0.4))
            out.append(("node_rebooted", base, 0.0))
            out.append(
                ("backup_newest_age_seconds", {**base, "backup": "db", "copy": "local"}, 3600.0)
            )
        elif kind == "snmp":
            for p in range(48):
                labels = {**base, "port": f"Gi0/{p}", **({"role": "uplink"} if p < 5 else {})}
                out.append(("if_oper_up", labels, 1.0))
        elif kind == "modbus":
            out.append(("room_temperature_celsius", base, 22.0))
            out.append(("room_humidity_percent", base, 50.0))
        else:
            out.append(("probe_success", base, 1.0))
            out.append(("http_content_changed", base, 0.0))
        i += 1
    return out[:n]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    pack = load_pack("duty")
    engine = RuleEngine(pack)
    defs = series(args.series)
    per_metric = {}
    for r in pack:
        per_metric[r.metric] = per_metric.get(r.metric, 0) + 1
    evals_per_round = sum(per_metric.get(m, 0) for m, _, _ in defs)

    # Whole-round ingest: every series gets one sample, as if every target was polled once.
    wall, cpu = 0.0, 0.0
    now = 1_000_000.0
    for _ in range(args.rounds):
        now += 30
        samples = [Sample.of(m, v, now, labels) for m, labels, v in defs]
        w0, c0 = time.perf_counter(), time.process_time()
        events = engine.ingest(samples, now)
        wall += time.perf_counter() - w0
        cpu += time.process_time() - c0
        assert events == [], events[:1]
    samples_total = args.rounds * len(defs)

    # 1 % of the series: room temperatures and file systems go bad; alerts pend.
    bad = [d for d in defs if d[0] in ("node_filesystem_used_ratio", "room_temperature_celsius")]
    bad = bad[: max(1, len(defs) // 100)]
    now += 30
    hot = [
        Sample.of(m, 0.9 if m.startswith("node_") else 30.0, now, labels) for m, labels, _ in bad
    ]
    engine.ingest(hot, now)
    pending = len(engine.alerts)
    t_tick = []
    for k in range(20):
        t0 = time.perf_counter()
        engine.tick(now + k * 0.05)
        t_tick.append(time.perf_counter() - t0)

    # Latency: the one sample that completes `for` (5 m for disk_almost_full) -> its event.
    latencies = []
    start = now
    for m, labels, _ in bad[:200]:
        if m != "node_filesystem_used_ratio":
            continue
        at = start + 300.0
        s = Sample.of(m, 0.9, at, labels)
        t0 = time.perf_counter()
        events = engine.ingest([s], at)
        latencies.append(time.perf_counter() - t0)
        assert any(e.rule == "disk_almost_full" and str(e.state) == "firing" for e in events)
    latencies.sort()
    result = {
        "series": len(defs),
        "rules": len(pack),
        "rule_evaluations_per_s": round(args.rounds * evals_per_round / wall),
        "samples_per_s": round(samples_total / wall),
        "cpu_us_per_sample": round(cpu / samples_total * 1e6, 2),
        "active_alerts": pending,
        "tick_ms_p50": round(statistics.median(t_tick) * 1e3, 2),
        "for_complete_to_event_ms_p50": round(statistics.median(latencies) * 1e3, 3),
        "for_complete_to_event_ms_max": round(latencies[-1] * 1e3, 3),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
