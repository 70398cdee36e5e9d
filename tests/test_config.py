"""Config validation: every problem reported at once, with key path and line."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dutyd.agent.config import load_config
from dutyd.core.errors import ConfigError

GOOD_TARGET = """
targets:
  - name: room-a-sensor
    kind: modbus
    address: 127.0.0.1:5020
    interval: 10s
    timeout: 2s
    labels: {site: hq, room: A}
    registers:
      - {name: room_temperature_celsius, address: 0, type: int16, scale: 0.1}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dutyd.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    return info.value.problems


def test_good_config_loads(tmp_path):
    settings = load_config(write(tmp_path, GOOD_TARGET))
    assert settings.targets[0].name == "room-a-sensor"
    assert settings.targets[0].interval == 10.0
    assert settings.http.listen == "127.0.0.1"


BAD_CONFIGS = [
    pytest.param(
        GOOD_TARGET.replace("interval: 10s", "interval: soon"),
        "targets[0].interval: 'soon' is not a duration such as 30s, 5m, 2h, 1h30m (line 6)",
        id="wrong-type",
    ),
    pytest.param(
        GOOD_TARGET.replace("timeout: 2s", "timout: 2s"),
        "targets[0].timout: unknown key (did you mean 'timeout'?) (line 7)",
        id="unknown-key",
    ),
    pytest.param(
        GOOD_TARGET.replace("    address: 127.0.0.1:5020\n", ""),
        "targets[0].address: required key is missing (line 3)",
        id="missing-address",
    ),
    pytest.param(
        GOOD_TARGET.replace("interval: 10s", "interval: -5"),
        "targets[0].interval: must be greater than 0 (line 6)",
        id="negative-interval",
    ),
    pytest.param(
        GOOD_TARGET.replace("interval: 10s", "interval: 1ms"),
        "targets[0].interval: must be at least 0.1s (line 6)",
        id="interval-too-short",
    ),
    pytest.param(
        GOOD_TARGET.replace("timeout: 2s", "timeout: 0"),
        "targets[0].timeout: must be greater than 0 (line 7)",
        id="zero-timeout",
    ),
    pytest.param(
        GOOD_TARGET
        + """
rules:
  custom:
    - name: hot
      metric: room_temp_celsius
      condition: {above: 30}
""",
        "rules.custom[0].metric: unknown metric 'room_temp_celsius': no configured target "
        "produces it (did you mean 'room_temperature_celsius'?) (line 15)",
        id="rule-unknown-metric",
    ),
    pytest.param(
        GOOD_TARGET
        + """
rules:
  custom:
    - name: hot
      metric: room_temperature_celsius
      targets: [room-b-sensor]
      condition: {above: 30}
""",
        "rules.custom[0].targets[0]: unknown target 'room-b-sensor' (line 16)",
        id="rule-unknown-target",
    ),
    pytest.param(
        GOOD_TARGET
        + """
  - name: room-a-sensor
    kind: modbus
    address: 127.0.0.1:5021
    registers:
      - {name: room_humidity_percent, address: 1, type: uint16}
""",
        "targets[1].name: duplicate target name 'room-a-sensor' (first at targets[0]) (line 12)",
        id="duplicate-target",
    ),
    pytest.param(
        """
targets:
  - name: ups-nut
    kind: nut
    address: 127.0.0.1
    username: monitor
    password_file: /nonexistent/dutyd-secret
""",
        "targets[0].password_file: cannot read secret file '/nonexistent/dutyd-secret': "
        "No such file or directory (line 7)",
        id="unreadable-secret-file",
    ),
    pytest.param(
        """
targets:
  - name: x
    kind: teleport
    address: 127.0.0.1
""",
        "targets[0].kind: unknown target kind 'teleport'; known kinds:",
        id="unknown-kind",
    ),
    pytest.param(
        "targets: [\n  - name: x\n",
        "not valid YAML",
        id="not-yaml",
    ),
    pytest.param(
        GOOD_TARGET + "\nhttp: {port: 99999}\n",
        "http.port: must be at most 65535 (got 99999) (line 12)",
        id="port-range",
    ),
    pytest.param(
        GOOD_TARGET + "\nrules:\n  packs: [dutty]\n",
        "rules.packs[0]: unknown rule pack 'dutty'; available: duty (line 13)",
        id="unknown-pack",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD_CONFIGS)
def test_bad_config_is_reported(tmp_path, text, expected):
    found = problems(tmp_path, text)
    assert any(expected in p for p in found), found


def test_three_mistakes_are_all_reported(tmp_path):
    text = (
        GOOD_TARGET.replace("interval: 10s", "interval: -1").replace("timeout: 2s", "timout: 2s")
        + """
rules:
  custom:
    - name: hot
      metric: room_temp_celsius
      condition: {above: 30}
"""
    )
    found = problems(tmp_path, text)
    assert len(found) == 3, found
    assert found[0].startswith("targets[0].interval: must be greater than 0 (line 6)")
    assert found[1].startswith("targets[0].timout: unknown key")
    assert found[2].startswith("rules.custom[0].metric: unknown metric")


def test_cross_references_are_reported_with_the_schema_errors(tmp_path):
    """An unknown channel, role or person is reported in the same pass as a type error, each
    at its own key path and line, never as one '(top level)' line after the others are fixed."""
    text = (
        GOOD_TARGET.replace("interval: 10s", "interval: fast")
        + """
oncall:
  pairs: [[Zhang Wei, Nobody]]
  people:
    - name: Zhang Wei
      contacts: [phone, pager]
  roles: {manager: [Zhang Wei, Ghost]}
  overrides:
    - {start: 2026-01-01T08:00:00, end: 2026-01-02T08:00:00, replace: Zhang Wei, by: Stranger}
notify:
  channels:
    phone: {url: "json://127.0.0.1:9/"}
escalation:
  policies:
    - name: default
      steps:
        - roles: [manager, boss]
          people: [Li Na]
          channels: [chat]
      red_line: {roles: [director]}
"""
    )
    found = problems(tmp_path, text)
    assert not any("(top level)" in p for p in found), found
    expected = [
        "targets[0].interval: 'fast' is not a duration",
        "oncall.pairs[0][1]: unknown person 'Nobody' (line ",
        "oncall.people[0].contacts[1]: unknown channel 'pager' (line ",
        "oncall.roles.manager[1]: unknown person 'Ghost' (line ",
        "oncall.overrides[0].by: unknown person 'Stranger' (line ",
        "escalation.policies[0].steps[0].roles[1]: unknown role 'boss' (line ",
        "escalation.policies[0].steps[0].people[0]: unknown person 'Li Na' (line ",
        "escalation.policies[0].steps[0].channels[0]: unknown channel 'chat' (line ",
        "escalation.policies[0].red_line.roles[0]: unknown role 'director' (line ",
    ]
    for want in expected:
        assert any(p.startswith(want) for p in found), (want, found)
    assert len(found) == len(expected), found


def test_environment_overrides_file(tmp_path, monkeypatch):
    monkeypatch.setenv("DUTYD_HTTP__PORT", "9999")
    monkeypatch.setenv("DUTYD_LOG__FORMAT", "json")
    settings = load_config(write(tmp_path, GOOD_TARGET + "\nhttp: {port: 8000}\n"))
    assert settings.http.port == 9999
    assert settings.log.format == "json"


def test_secret_from_env_and_file(tmp_path, monkeypatch):
    secret = tmp_path / "ups.secret"
    secret.write_text("s3cret-from-file\n")
    monkeypatch.setenv("UPS_PW", "s3cret-from-env")
    settings = load_config(
        write(
            tmp_path,
            f"""
targets:
  - {{name: a, kind: nut, address: 127.0.0.1, username: u, password_file: {secret}}}
  - {{name: b, kind: nut, address: 127.0.0.1, username: u, password_env: UPS_PW}}
""",
        )
    )
    a, b = settings.targets
    assert a.password_file.get_secret_value() == "s3cret-from-file"
    assert b.password_env.get_secret_value() == "s3cret-from-env"
    # A secret never shows in the model's text form (logs, errors, API dumps).
    assert "s3cret" not in repr(settings)
    assert "s3cret" not in str(settings.model_dump())


def test_check_config_cli_exit_code_and_report(tmp_path):
    path = write(tmp_path, GOOD_TARGET.replace("timeout: 2s", "timeout: -2"))
    proc = subprocess.run(
        [sys.executable, "-m", "dutyd.agent.cli", "check-config", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "targets[0].timeout: must be greater than 0 (line 7)" in proc.stderr
    assert str(path) in proc.stderr

    good = write(tmp_path, GOOD_TARGET)
    proc = subprocess.run(
        [sys.executable, "-m", "dutyd.agent.cli", "check-config", str(good)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_run_refuses_invalid_config(tmp_path):
    path = write(tmp_path, GOOD_TARGET.replace("kind: modbus", "kind: modbuss"))
    proc = subprocess.run(
        [sys.executable, "-m", "dutyd.agent.cli", "run", "-c", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "refusing to start" in proc.stderr
    assert "targets[0].kind: unknown target kind 'modbuss'" in proc.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            GOOD_TARGET + "    depends_on: 5\n",
            "targets[0].depends_on: input should be a valid list",
            id="depends-on-scalar",
        ),
        pytest.param(
            GOOD_TARGET + "    depends_on: [{x: 1}]\n",
            "targets[0].depends_on[0]: input should be a valid string",
            id="depends-on-mapping-item",
        ),
        pytest.param(
            GOOD_TARGET + "\nrules:\n  packs: 5\n",
            "rules.packs: input should be a valid list",
            id="packs-scalar",
        ),
        pytest.param(
            GOOD_TARGET + "\nrules:\n  maintenance: [{targets: 3}]\n",
            "rules.maintenance[0].targets: input should be a valid list",
            id="maintenance-targets-scalar",
        ),
        pytest.param(
            GOOD_TARGET + "\nrules:\n  custom: [{metric: target_up, targets: [[1]]}]\n",
            "rules.custom[0].targets[0]: input should be a valid string",
            id="rule-target-list",
        ),
        pytest.param(GOOD_TARGET + "\n1: x\n", "1: a top-level key", id="non-string-key"),
    ],
)
def test_malformed_structure_is_reported_not_crashed(tmp_path, text, expected):
    # Each of these once escaped as a bare TypeError from the cross-reference check.
    found = problems(tmp_path, text)
    assert any(expected in p for p in found), found


@pytest.mark.parametrize(
    "target",
    [
        "{name: a, kind: nut, address: 127.0.0.1, username: u, password: 918273645}",
        "{name: a, kind: snmp, address: 127.0.0.1, community: 918273645}",
        "{name: a, kind: ssh, address: 127.0.0.1, user: u, password: 918273645}",
    ],
)
def test_mistyped_secret_is_not_echoed_in_the_report(tmp_path, target):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, f"targets:\n  - {target}\n"))
    report = str(info.value)
    assert "targets[0]." in report
    assert "918273645" not in report, report


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400", ".nan", ".inf"])
def test_non_finite_interval_is_refused(tmp_path, value):
    # NaN passed `> 0` and made the scheduler poll back to back; inf never polled at all.
    found = problems(tmp_path, GOOD_TARGET.replace("interval: 10s", f"interval: {value}"))
    assert any(p.startswith("targets[0].interval:") and "finite" in p for p in found), found


def test_environment_variable_that_is_not_json_is_reported(tmp_path, monkeypatch):
    # pydantic-settings raised its own SettingsError here, which escaped as a traceback.
    monkeypatch.setenv("DUTYD_TARGETS", '[{"name": "x", "password": "hunter2"')
    found = problems(tmp_path, GOOD_TARGET)
    assert found == ["environment variable DUTYD_TARGETS: not valid JSON for this setting"]


def test_trap_users_accept_the_spellings_polled_targets_accept(tmp_path):
    """net-snmp's `-a SHA-256 -x AES` is what a trap sender is set up with: a trap user must
    load with the same words as a polled v3 target (they were refused as "should be 'DES',
    'AES128', ...")."""
    from dutyd.collectors.snmp.trap_config import TrapUser

    secrets = {"auth_password": "auth-secret-1", "priv_password": "priv-secret-1"}
    user = TrapUser.model_validate(
        {
            "user": "traps",
            "auth_protocol": "SHA-256",
            "priv_protocol": "AES",
            **secrets,
            "targets": ["*"],
        }
    )
    assert (user.auth_protocol, user.priv_protocol) == ("SHA256", "AES128")
    settings = load_config(
        write(
            tmp_path,
            GOOD_TARGET
            + """
            traps:
              users:
                - {user: traps, auth_protocol: HMAC-SHA, auth_password: auth-secret-1,
                   priv_protocol: aes-256, priv_password: priv-secret-1, targets: ["*"]}
            """.replace("\n            ", "\n"),
        )
    )
    assert settings.traps is not None
    (loaded,) = settings.traps.users
    assert (loaded.auth_protocol, loaded.priv_protocol) == ("SHA", "AES256")


def test_a_trap_user_with_an_unknown_protocol_names_the_accepted_ones(tmp_path):
    found = problems(
        tmp_path,
        GOOD_TARGET
        + "traps:\n  users:\n    - {user: t, auth_protocol: SHA, auth_password: auth-secret-1,"
        " priv_protocol: 3DES, priv_password: priv-secret-1}\n",
    )
    assert any(
        p.startswith("traps.users[0].priv_protocol:")
        and "not an SNMPv3 privacy protocol; use one of" in p
        and "AES128" in p
        for p in found
    ), found
