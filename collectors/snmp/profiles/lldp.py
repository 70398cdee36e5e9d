"""The `lldp` profile (LLDP-MIB, IEEE 802.1AB): which device each port of a switch sees.

Per neighbour in lldpRemTable, `lldp_neighbour{port, neighbour} 1`: `neighbour` is its
lldpRemSysName, `port` this switch's port (lldpLocPortDesc of lldpRemLocalPortNum, else the
number). The daemon turns these into the tree `depends_on: auto` uses (agent/topology.py).
A switch without LLDP, or with no neighbours, gives no sample (not an error). Bounded: at most
`MAX_NEIGHBOURS` neighbours per poll, names cut to label length.
"""

from __future__ import annotations

from typing import ClassVar

from dutyd.collectors.base import Readings
from dutyd.collectors.snmp.codec import Oid, decode_subids, encode_oid_content, parse_oid
from dutyd.collectors.snmp.profiles.base import PollData, Profile, text

LLDP_REM_SYS_NAME = parse_oid("1.0.8802.1.1.2.1.4.1.1.9")
LLDP_LOC_PORT_DESC = parse_oid("1.0.8802.1.1.2.1.3.7.1.4")
MAX_NEIGHBOURS = 256


def _port_key(port_num: int) -> bytes:
    """The raw index bytes lldpLocPortTable keys port `port_num` by."""
    return encode_oid_content((1, 3, port_num))[1:]


class LldpProfile(Profile):
    name: ClassVar[str] = "lldp"

    @classmethod
    def help_for(cls, config: object) -> dict[str, str]:
        return {
            "lldp_neighbour": (
                "1 per LLDP neighbour: its sysName (neighbour) seen on this switch's port (port)."
            )
        }

    def scalars(self) -> list[Oid]:
        return []

    def columns(self) -> list[Oid]:
        return [LLDP_REM_SYS_NAME, LLDP_LOC_PORT_DESC]

    def emit(self, data: PollData, readings: Readings) -> None:
        remote = data.columns.get(LLDP_REM_SYS_NAME) or {}
        ports = data.columns.get(LLDP_LOC_PORT_DESC) or {}
        seen: set[tuple[str, str]] = set()
        for index, value in remote.items():
            if len(seen) >= MAX_NEIGHBOURS:
                break
            name = text(value)
            try:
                subids = decode_subids(index)  # lldpRemTimeMark.lldpRemLocalPortNum.lldpRemIndex
            except ValueError:
                continue
            if not name or len(subids) < 2:
                continue
            port = text(ports.get(_port_key(subids[1]))) or str(subids[1])
            if (port, name) not in seen:
                seen.add((port, name))
                readings.add("lldp_neighbour", 1.0, port=port, neighbour=name)
