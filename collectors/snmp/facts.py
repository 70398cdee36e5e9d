"""What an SNMP device is, for the equipment register: the system group (sysDescr,
sysObjectID, sysName, sysLocation) and, where the agent serves ENTITY-MIB, the chassis's
maker, model, serial and firmware (entPhysicalTable, RFC 6933). Read on a poll at start and
daily (`Collector.facts_due`), never on every poll."""

from __future__ import annotations

from dutyd.collectors.snmp.client import Column, Query
from dutyd.collectors.snmp.codec import AnyValue, format_oid, parse_oid

SYSTEM = {
    "description": parse_oid("1.3.6.1.2.1.1.1.0"),
    "object_id": parse_oid("1.3.6.1.2.1.1.2.0"),
    "name": parse_oid("1.3.6.1.2.1.1.5.0"),
    "location": parse_oid("1.3.6.1.2.1.1.6.0"),
}
_ENTRY = "1.3.6.1.2.1.47.1.1.1.1"
ENTITY = {
    "class": parse_oid(f"{_ENTRY}.5"),
    "hardware": parse_oid(f"{_ENTRY}.8"),
    "firmware": parse_oid(f"{_ENTRY}.9"),
    "software": parse_oid(f"{_ENTRY}.10"),
    "serial": parse_oid(f"{_ENTRY}.11"),
    "vendor": parse_oid(f"{_ENTRY}.12"),
    "model": parse_oid(f"{_ENTRY}.13"),
}
CHASSIS = 3  # entPhysicalClass chassis(3)
# A stack or a chassis full of line cards has hundreds of entities; more are not read.
MAX_ENTITIES = 2000


def facts_query() -> Query:
    return Query(list(SYSTEM.values()), list(ENTITY.values()))


def _text(value: AnyValue) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, tuple):
        return format_oid(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return ""  # noSuchObject and friends


def facts_from(scalars: list[AnyValue], columns: list[Column]) -> dict[str, str]:
    facts = {k: _text(v) for k, v in zip(SYSTEM, scalars, strict=True)}
    table = dict(zip(ENTITY, columns, strict=True))
    classes = table["class"]
    # The chassis (the first, if a stack has several), else the first entity with a serial.
    rows: list[bytes] = sorted({i for column in table.values() for i in column})
    chassis = [i for i in rows if classes.get(i) == CHASSIS]
    with_serial = [i for i in rows if _text(table["serial"].get(i))]
    index = (chassis or with_serial or [None])[0]
    if index is not None:
        for key in ("vendor", "model", "serial", "firmware", "software", "hardware"):
            facts[key] = _text(table[key].get(index))
    return {k: v.strip() for k, v in facts.items() if v and v.strip()}
