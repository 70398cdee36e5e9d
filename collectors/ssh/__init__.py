"""SSH collector: load, memory, disks, uptime, services, backups and user checks of a Linux server.

Nothing is installed on the server. One persistent asyncssh connection per target is reused
across polls; each poll runs one remote script of standard commands and parses their output.
A section that fails marks only that reading down (`ssh_reading_ok{reading=...} 0`, the reason
logged); connection, host key and login problems mark the whole target down. Windows servers
are not supported. See README.md beside this file for the configuration and the metrics.

Modules, one concept each:
    config.py     the target model (SshTarget, SshBackup, SshCommand)
    hostkeys.py   known_hosts verification and trust on first use
    session.py    the kept connection: login, reconnect backoff, running the script
    commands.py   the exact remote script
    parsers.py    pure parsers of the tools' output
    readings.py   parsed output -> samples, one reading at a time
    collector.py  SshCollector: one poll, wiring the above
"""

from __future__ import annotations

from dutyd.collectors.ssh.collector import SshCollector
from dutyd.collectors.ssh.config import SshBackup, SshCommand, SshTarget
from dutyd.collectors.ssh.session import DEFAULT_CONNECT_SLOTS

__all__ = ["DEFAULT_CONNECT_SLOTS", "SshBackup", "SshCollector", "SshCommand", "SshTarget"]
