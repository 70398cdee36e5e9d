"""SNMP profiles: a name a user writes in `profiles:` -> the class that reads it."""

from __future__ import annotations

from dutyd.collectors.snmp.profiles.base import Profile
from dutyd.collectors.snmp.profiles.lldp import LldpProfile
from dutyd.collectors.snmp.profiles.sensor import SensorProfile
from dutyd.collectors.snmp.profiles.switch import SwitchProfile
from dutyd.collectors.snmp.profiles.ups import UpsProfile

PROFILES: dict[str, type[Profile]] = {
    SwitchProfile.name: SwitchProfile,
    UpsProfile.name: UpsProfile,
    SensorProfile.name: SensorProfile,
    LldpProfile.name: LldpProfile,
}

__all__ = ["PROFILES", "Profile"]
