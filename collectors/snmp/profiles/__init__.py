"""SNMP profiles: a name a user writes in `profiles:` -> the class that reads it.

A new profile is one module here and one line in `PROFILES`: the target model accepts every
name registered, and a room-sensor profile (profiles/room.py) is recognised by `dutyd discover`
too."""

from __future__ import annotations

from dutyd.collectors.snmp.profiles.apc_probe import ApcProbeProfile
from dutyd.collectors.snmp.profiles.apc_uio import ApcUioProfile
from dutyd.collectors.snmp.profiles.base import Profile
from dutyd.collectors.snmp.profiles.bridge import BridgeProfile
from dutyd.collectors.snmp.profiles.entity_sensor import EntitySensorProfile
from dutyd.collectors.snmp.profiles.lldp import LldpProfile
from dutyd.collectors.snmp.profiles.sensor import SensorProfile
from dutyd.collectors.snmp.profiles.switch import SwitchProfile
from dutyd.collectors.snmp.profiles.ups import UpsProfile

PROFILES: dict[str, type[Profile]] = {
    SwitchProfile.name: SwitchProfile,
    UpsProfile.name: UpsProfile,
    SensorProfile.name: SensorProfile,
    LldpProfile.name: LldpProfile,
    EntitySensorProfile.name: EntitySensorProfile,
    ApcProbeProfile.name: ApcProbeProfile,
    ApcUioProfile.name: ApcUioProfile,
    BridgeProfile.name: BridgeProfile,
}

__all__ = ["PROFILES", "Profile"]
