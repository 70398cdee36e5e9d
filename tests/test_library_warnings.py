"""A third-party library's warning never reaches an operator's terminal from `dutyd`: it goes to
the debug log, once. dutyd's own warnings stay as loud as Python makes them (issue 21)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

import dutyd

NOISY_LIBRARY = '''
import warnings


class NoisyDeprecationWarning(UserWarning):
    """Like cryptography's CryptographyDeprecationWarning: a UserWarning, so Python shows it."""


def touch_old_api():
    warnings.warn("OldKey is deprecated", NoisyDeprecationWarning, stacklevel=1)


touch_old_api()
touch_old_api()
'''


def _run(tmp_path: Path, script: str) -> subprocess.CompletedProcess[str]:
    site = tmp_path / "lib" / "site-packages"
    (site / "noisylib").mkdir(parents=True)
    (site / "noisylib" / "__init__.py").write_text(NOISY_LIBRARY)
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("PYTHONWARNINGS", None)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def test_a_library_warning_goes_to_the_debug_log_once_not_to_the_terminal(
    tmp_path: Path,
) -> None:
    out = _run(
        tmp_path,
        """
        from dutyd.agent import logsetup
        logsetup.route_library_warnings()
        import noisylib
        noisylib.touch_old_api()
        logsetup.configure("text", "DEBUG")
        noisylib.touch_old_api()
        """,
    )
    assert out.returncode == 0, out.stderr
    assert "NoisyDeprecationWarning" in out.stderr
    lines = [line for line in out.stderr.splitlines() if "OldKey is deprecated" in line]
    # Raised four times from one place, before and after logging was configured: one line.
    assert len(lines) == 1, out.stderr
    assert all(" DEBUG " in line and "library warning" in line for line in lines), lines
    assert "warnings.warn(" not in out.stderr  # Python's own two-line form never printed


def test_library_warnings_are_silent_at_the_default_level(tmp_path: Path) -> None:
    out = _run(
        tmp_path,
        """
        from dutyd.agent import logsetup
        logsetup.route_library_warnings()
        import noisylib
        logsetup.configure("text", "INFO")
        noisylib.touch_old_api()
        """,
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""


def test_dutyds_own_warnings_stay_loud(tmp_path: Path) -> None:
    own_file = Path(dutyd.__file__).resolve().parent / "agent" / "logsetup.py"
    out = _run(
        tmp_path,
        f"""
        import warnings
        from dutyd.agent import logsetup
        logsetup.route_library_warnings()
        logsetup.configure("text", "INFO")
        warnings.warn_explicit("dutyd's own mistake", UserWarning, {str(own_file)!r}, 1)
        """,
    )
    assert out.returncode == 0, out.stderr
    assert "UserWarning: dutyd's own mistake" in out.stderr


def test_dutyd_commands_print_only_their_own_output(tmp_path: Path) -> None:
    """Whatever cryptography/asyncssh pair is installed (the lock's, or the newest with
    `scripts/test --latest`), `dutyd check-config` prints its answer and nothing else."""
    (tmp_path / "id").write_text("not read by check-config beyond its existence\n")
    (tmp_path / "known_hosts").write_text("")
    config = tmp_path / "dutyd.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "targets": [
                    {"name": "web", "kind": "tcp", "address": "127.0.0.1:9"},
                    {
                        "name": "srv",
                        "kind": "ssh",
                        "address": "127.0.0.1:22",
                        "username": "duty",
                        "known_hosts": str(tmp_path / "known_hosts"),
                        "client_keys": [str(tmp_path / "id")],
                    },
                ],
                "storage": {"path": str(tmp_path / "d.db")},
            }
        )
    )
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)
    out = subprocess.run(
        [sys.executable, "-m", "dutyd.agent.cli", "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert out.stderr == "", out.stderr
    assert out.stdout.strip() == f"{config}: OK (2 targets)", out.stdout
