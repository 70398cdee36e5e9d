"""The configs that watch a fleet: dutyd's (one YAML file) and the Prometheus stack's
(prometheus.yml with file_sd target lists, alert rules, snmp_exporter and blackbox_exporter
modules, alertmanager.yml with a webhook receiver).

The duty rules the benchmark measures, and their Prometheus equivalents (same thresholds, same
`for`):

    duty pack rule                    Prometheus rule (bench/fleet/prometheus/rules.yml)
    ups_on_battery        for 10s     UpsOnBattery        upsOutputSource == 5          for 10s
    room_temperature_out_of_range 5m  RoomTemperature     room_temperature_celsius
                                                          outside 18..26                for 5m
    datacentre_network_outage   1m    TargetDown          up{job="snmp_switch"} == 0    for 1m
    ups_snmp_unreachable / ups_unreachable 1m            up{job="snmp_ups"} == 0 /
                                                          probe_success{job="nut"} == 0 for 1m
    device_down                 1m                        probe_success{job=~"modbus|ssh"} == 0
    application_fault / _unreachable 2m ApplicationFault  probe_success{job="http"} == 0 for 2m

Debian has no NUT or Modbus exporter, so the Prometheus stack watches NUT UPS units, Modbus
sensors and SSH servers with blackbox_exporter (a NUT `VER` exchange, a TCP connect, the SSH
banner): it sees them go down but not a UPS on battery over NUT nor a room temperature. The
RoomTemperature rule is written all the same (it needs a Modbus exporter to feed it).
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import yaml

from bench.fleet.devices import ssh_key_paths, write_ssh_keys
from bench.fleet.spec import COMMUNITY, Device, FleetSpec

SNMP_EXPORTER_BASE = Path(__file__).resolve().parent.parent / "snmp_exporter.yml"

# Labels that put each device under the duty pack rule meant for it (rules/packs/duty.yaml).
ROLE = {
    "switch": "network",
    "snmp_ups": "ups",
    "nut_ups": "ups",
    "room": "environment",
    "app": "application",
    "ssh": "server",
}


def _dur(seconds: float) -> str:
    return f"{seconds:g}s"


def dutyd_target(d: Device, spec: FleetSpec, directory: Path) -> dict[str, Any]:
    common: dict[str, Any] = {
        "name": d.name,
        "interval": _dur(spec.interval),
        "timeout": _dur(spec.timeout),
        "labels": {"site": "fleet", "role": ROLE[d.kind]},
    }
    if d.kind in ("switch", "snmp_ups"):
        return {
            **common,
            "kind": "snmp",
            "address": d.address,
            "version": "2c",
            "community": COMMUNITY,
            "profiles": ["switch" if d.kind == "switch" else "ups"],
            "max_repetitions": 25,
        }
    if d.kind == "nut_ups":
        return {**common, "kind": "nut", "address": d.address, "ups": "ups"}
    if d.kind == "room":
        return {
            **common,
            "kind": "modbus",
            "address": d.address,
            "unit_id": 1,
            "registers": [
                {
                    "name": "room_temperature_celsius",
                    "address": 0,
                    "type": "int16",
                    "scale": 0.1,
                    "unit": "°C",
                },
                {
                    "name": "room_humidity_percent",
                    "address": 1,
                    "type": "uint16",
                    "scale": 0.1,
                    "unit": "%RH",
                },
            ],
        }
    if d.kind == "app":
        return {
            **common,
            "kind": "http",
            "address": f"http://{d.address}/",
            "expected_text": "App OK",
        }
    _host_key, client_key, known_hosts = ssh_key_paths(directory)
    return {
        **common,
        "kind": "ssh",
        "address": d.host,
        "port": d.port,
        "username": "dutyd",
        "client_keys": [str(client_key)],
        "known_hosts": str(known_hosts),
        "connect_timeout": _dur(min(5.0, spec.timeout)),
        "command_timeout": _dur(max(1.0, spec.timeout / 3)),
        "services": ["nginx.service", "postgresql.service"],
    }


def dutyd_config(spec: FleetSpec, directory: Path, http_port: int, receiver: str) -> dict[str, Any]:
    """`receiver` is the base URL of the webhook receiver (http://127.0.0.1:PORT/dutyd); every
    page reaches it through apprise's json:// as it would reach a real phone gateway."""
    hook = receiver.replace("http://", "json://", 1)
    people = ["Duty One", "Duty Two"]
    return {
        "targets": [dutyd_target(d, spec, directory) for d in spec.plan()],
        "rules": {"packs": ["duty"]},
        "oncall": {
            "timezone": "UTC",
            "handovers": ["08:00"],
            "pairs": [people],
            "people": [
                {"name": p, "language": "en", "contacts": [f"pager_{i}"]}
                for i, p in enumerate(people)
            ],
        },
        "escalation": {"policies": [{"name": "all", "steps": [{"after": "0s", "oncall": True}]}]},
        "notify": {
            "timezone": "UTC",
            "channels": {
                f"pager_{i}": {"url": f"{hook}/{p.replace(' ', '_')}"} for i, p in enumerate(people)
            },
            "ack_secret": secrets.token_hex(16),
            "ack_base_url": f"http://127.0.0.1:{http_port}",
        },
        "api": {"token": secrets.token_hex(16)},
        "http": {"listen": "127.0.0.1", "port": http_port},
        "storage": {"path": str(directory / "dutyd.db")},
        "log": {"level": "WARNING"},
    }


# ----- the Prometheus stack ----------------------------------------------------------------

# Settings of the stack. "typical": what a department gets from the shipped defaults and the
# upstream example configs. "tuned": evaluation and grouping as short as makes sense for
# paging, and the Go runtime held to one core and a tighter heap.
STACK_SETTINGS: dict[str, dict[str, Any]] = {
    "typical": {
        "evaluation_interval": "15s",
        "group_wait": "30s",
        "group_interval": "5m",
        "env": {},
    },
    "tuned": {
        "evaluation_interval": "5s",
        "group_wait": "0s",
        "group_interval": "1m",
        "env": {"GOMAXPROCS": "1", "GOGC": "50"},
    },
}

BLACKBOX_MODULES = {
    "modules": {
        "http_2xx": {
            "prober": "http",
            "timeout": "9s",
            "http": {"fail_if_body_not_matches_regexp": ["App OK"], "preferred_ip_protocol": "ip4"},
        },
        "nut_ver": {
            "prober": "tcp",
            "timeout": "9s",
            "tcp": {
                "preferred_ip_protocol": "ip4",
                "query_response": [{"send": "VER"}, {"expect": "^Network UPS Tools"}],
            },
        },
        "ssh_banner": {
            "prober": "tcp",
            "timeout": "9s",
            "tcp": {"preferred_ip_protocol": "ip4", "query_response": [{"expect": "^SSH-2.0-"}]},
        },
        "tcp_connect": {"prober": "tcp", "timeout": "9s", "tcp": {"preferred_ip_protocol": "ip4"}},
    }
}

PROMETHEUS_RULES = {
    "groups": [
        {
            "name": "duty",
            "rules": [
                {
                    "alert": "UpsOnBattery",
                    "expr": "upsOutputSource == 5",
                    "for": "10s",
                    "labels": {"severity": "critical"},
                    "annotations": {"summary": "UPS {{ $labels.device }} runs on battery"},
                },
                {
                    "alert": "RoomTemperature",
                    "expr": "room_temperature_celsius > 26 or room_temperature_celsius < 18",
                    "for": "5m",
                    "labels": {"severity": "critical"},
                    "annotations": {"summary": "Room at {{ $value }} °C on {{ $labels.device }}"},
                },
                {
                    "alert": "TargetDown",
                    "expr": 'up{job=~"snmp_.*"} == 0 or probe_success{job=~"nut|modbus|ssh"} == 0',
                    "for": "1m",
                    "labels": {"severity": "critical"},
                    "annotations": {"summary": "{{ $labels.device }} is not answering"},
                },
                {
                    "alert": "ApplicationFault",
                    "expr": 'probe_success{job="http"} == 0',
                    "for": "2m",
                    "labels": {"severity": "critical"},
                    "annotations": {"summary": "Application {{ $labels.device }} fails its check"},
                },
            ],
        }
    ]
}

# job -> (device kinds, exporter, module, target form)
JOBS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "snmp_switch": (("switch",), "snmp", "if_mib"),
    "snmp_ups": (("snmp_ups",), "snmp", "ups"),
    "nut": (("nut_ups",), "blackbox", "nut_ver"),
    "modbus": (("room",), "blackbox", "tcp_connect"),
    "ssh": (("ssh",), "blackbox", "ssh_banner"),
    "http": (("app",), "blackbox", "http_2xx"),
}


def snmp_exporter_config(spec: FleetSpec) -> dict[str, Any]:
    """The SNMP bench's modules (same OIDs as dutyd's profiles) with the fleet's community and
    timeout."""
    modules = yaml.safe_load(SNMP_EXPORTER_BASE.read_text())
    out = {}
    for name in ("ups", "if_mib"):
        module = dict(modules[name])
        module["auth"] = {"community": COMMUNITY}
        module["timeout"] = _dur(min(spec.timeout - 1, 4.0))
        module["retries"] = 1
        out[name] = module
    return out


def prometheus_config(
    spec: FleetSpec, directory: Path, stack: str, ports: dict[str, int]
) -> dict[str, Any]:
    settings = STACK_SETTINGS[stack]
    scrape_configs = []
    for job, (_kinds, exporter, module) in JOBS.items():
        path = "/snmp" if exporter == "snmp" else "/probe"
        scrape_configs.append(
            {
                "job_name": job,
                "metrics_path": path,
                "params": {"module": [module]},
                "file_sd_configs": [{"files": [str(directory / "sd" / f"{job}.json")]}],
                "relabel_configs": [
                    {"source_labels": ["__address__"], "target_label": "__param_target"},
                    {"source_labels": ["__param_target"], "target_label": "instance"},
                    {
                        "target_label": "__address__",
                        "replacement": f"127.0.0.1:{ports[exporter]}",
                    },
                ],
            }
        )
    return {
        "global": {
            "scrape_interval": _dur(spec.interval),
            "scrape_timeout": _dur(spec.timeout),
            "evaluation_interval": settings["evaluation_interval"],
        },
        "rule_files": [str(directory / "prometheus" / "rules.yml")],
        "alerting": {
            "alertmanagers": [
                {"static_configs": [{"targets": [f"127.0.0.1:{ports['alertmanager']}"]}]}
            ]
        },
        "scrape_configs": scrape_configs,
    }


def file_sd(spec: FleetSpec) -> dict[str, list[dict[str, Any]]]:
    by_job: dict[str, list[dict[str, Any]]] = {job: [] for job in JOBS}
    for d in spec.plan():
        for job, (kinds, _exporter, _module) in JOBS.items():
            if d.kind in kinds:
                target = f"http://{d.address}/" if d.kind == "app" else d.address
                labels = {"device": d.name, "role": ROLE[d.kind], "site": "fleet"}
                by_job[job].append({"targets": [target], "labels": labels})
    return by_job


def alertmanager_config(stack: str, receiver: str) -> dict[str, Any]:
    settings = STACK_SETTINGS[stack]
    return {
        "route": {
            "receiver": "pager",
            "group_by": ["alertname", "device"],
            "group_wait": settings["group_wait"],
            "group_interval": settings["group_interval"],
            "repeat_interval": "4h",
        },
        "receivers": [
            {
                "name": "pager",
                "webhook_configs": [{"url": f"{receiver}/{stack}", "send_resolved": False}],
            }
        ],
    }


def write_all(
    spec: FleetSpec,
    directory: Path,
    *,
    dutyd_port: int,
    receiver: str,
    stack_ports: dict[str, dict[str, int]] | None = None,
) -> dict[str, Path]:
    """Write every config of the room into `directory`; returns what is where.

    `receiver` is the webhook receiver's base URL; dutyd posts to `<receiver>/dutyd/<who>`,
    Alertmanager to `<receiver>/alertmanager/<stack>`. `stack_ports` gives each stack's
    {prometheus, snmp, blackbox, alertmanager} ports.
    """
    directory.mkdir(parents=True, exist_ok=True)
    devices = spec.plan()
    write_ssh_keys(directory, [d for d in devices if d.kind == "ssh"])
    (directory / "fleet.json").write_text(json.dumps(spec.to_dict(), indent=1))
    written: dict[str, Path] = {"spec": directory / "fleet.json"}

    dutyd = directory / "dutyd.yaml"
    dutyd.write_text(
        yaml.safe_dump(
            dutyd_config(spec, directory, dutyd_port, f"{receiver}/dutyd"),
            sort_keys=False,
            allow_unicode=True,
        )
    )
    written["dutyd"] = dutyd

    sd = directory / "sd"
    sd.mkdir(exist_ok=True)
    for job, entries in file_sd(spec).items():
        (sd / f"{job}.json").write_text(json.dumps(entries))
    prom = directory / "prometheus"
    prom.mkdir(exist_ok=True)
    (prom / "rules.yml").write_text(yaml.safe_dump(PROMETHEUS_RULES, sort_keys=False))
    (prom / "snmp.yml").write_text(yaml.safe_dump(snmp_exporter_config(spec), sort_keys=False))
    (prom / "blackbox.yml").write_text(yaml.safe_dump(BLACKBOX_MODULES, sort_keys=False))
    written["rules"] = prom / "rules.yml"
    written["snmp"] = prom / "snmp.yml"
    written["blackbox"] = prom / "blackbox.yml"
    default_ports = {
        "typical": {"prometheus": 19090, "snmp": 19116, "blackbox": 19115, "alertmanager": 19093},
        "tuned": {"prometheus": 19190, "snmp": 19216, "blackbox": 19215, "alertmanager": 19193},
    }
    for stack in STACK_SETTINGS:
        ports = (stack_ports or {}).get(stack, default_ports[stack])
        p = prom / f"prometheus-{stack}.yml"
        p.write_text(yaml.safe_dump(prometheus_config(spec, directory, stack, ports)))
        a = prom / f"alertmanager-{stack}.yml"
        a.write_text(yaml.safe_dump(alertmanager_config(stack, f"{receiver}/alertmanager")))
        written[f"prometheus-{stack}"] = p
        written[f"alertmanager-{stack}"] = a
    return written
