"""Config models of the machine room's people rules: the rooms and their doors (`rooms:`).

    rooms:
      - name: room-a                   # the `room` label of the door contact's samples
        approved: [Zhang Wei, Li Na]   # may enter without someone's approval (empty: the
                                       # people of oncall.people)
        door:                          # optional: an access-control system reports the door
          kind: webhook                # POST /api/v1/rooms/room-a/door {"open": true}
          token_env: DOOR_A_TOKEN      # its own token (X-Dutyd-Token), not the API token

Without `door:` the door contact is any target's sample `room_door_open{room="room-a"}` (a
Modbus coil or discrete input, an SNMP value of an environment monitor, or its traps mapped by
`traps.maps`): 1 open, 0 shut.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, SecretStr, field_validator, model_validator

from dutyd.core.configtypes import SecretEnv, SecretFile, StrictModel, pick_secret

_ROOM_NAME = re.compile(r"^[\w][\w .:-]{0,63}$")


class DoorWebhook(StrictModel):
    """The door contact as an HTTP webhook from an access-control system. Its token lets it
    report this room's door and nothing else."""

    kind: Literal["webhook"] = "webhook"
    token: SecretStr | None = None
    token_env: SecretEnv | None = None
    token_file: SecretFile | None = None

    @model_validator(mode="after")
    def _has_token(self) -> DoorWebhook:
        if self.secret() is None:
            raise ValueError("a door webhook needs its token: token_env, token_file or token")
        if len(self.secret() or "") < 16:
            raise ValueError("the door webhook's token must be at least 16 characters")
        return self

    def secret(self) -> str | None:
        return pick_secret(self.token, self.token_env, self.token_file)


class RoomConfig(StrictModel):
    """A machine room whose entries are registered and whose door is watched."""

    name: str = Field(description="the room's name, as in the `room` label of its door contact")
    approved: list[str] = Field(
        default_factory=list,
        description="people who may enter without an approval; empty: the oncall people",
    )
    door: DoorWebhook | None = Field(
        default=None, description="the door reported by webhook; without it, by samples"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _ROOM_NAME.match(v):
            raise ValueError("a room name is letters, digits, space, '_', '.', ':' or '-'")
        return v


class HandoverConfig(StrictModel):
    """`handover:` shift check-in. With `check_in`, the incoming pair confirms each shift (a
    signed link in a message, or the status page); nobody confirmed within the rule's `for`
    (`duty_post_unattended`, 15m; change it in rules.overrides) pages the manager."""

    check_in: bool = Field(default=False, description="ask each incoming pair to confirm")


def check_rooms(rooms: list[RoomConfig]) -> list[RoomConfig]:
    names = [r.name for r in rooms]
    doubles = sorted({n for n in names if names.count(n) > 1})
    if doubles:
        raise ValueError(f"room names must be unique: {', '.join(doubles)}")
    return rooms


RoomList = Annotated[list[RoomConfig], AfterValidator(check_rooms)]
