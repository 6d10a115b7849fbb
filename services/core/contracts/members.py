"""Member removal over the bus: each service forgets a removed member's data itself.

``openchat member remove NAME`` removes the member from the registry (``services.core.members``),
then asks every service that keeps member data, on ``oc.sys.member.remove.<service>`` (request/
reply, ``MemberRemoveArgs`` -> ``MemberRemoved``), to forget that member. Members cannot publish
below ``oc.sys`` (``natsconf.member_permissions``), so only the stack's own tools can ask. A service
that was not running forgets, at its next start, every member no longer in the registry.

==============  ========================================================================
service         what it forgets
==============  ========================================================================
connector       sessions, joined servers, profiles and profile assets, gap-fill anchors,
                link-preview switch, rate-limit state
state           the member's materialized view (Redis) and its events in the stream
notification    counts, cursors, notification preferences, focus reports
==============  ========================================================================
"""

from __future__ import annotations

from pydantic import Field

from services.core.contracts.bus import Contract
from services.core.contracts.subjects import MEMBER_RE, SYS_PREFIX, check_token

MEMBER_DATA_SERVICES = ("connector", "state", "notification")
MEMBER_REMOVE_TIMEOUT_S = 15.0


def member_remove_subject(service: str) -> str:
    return f"{SYS_PREFIX}.member.remove.{check_token(service, 'service')}"


class MemberRemoveArgs(Contract):
    member: str = Field(pattern=MEMBER_RE.pattern)


class MemberRemoved(Contract):
    service: str
    member: str
    removed: dict[str, int] = Field(default_factory=dict)  # what went: store -> rows/keys
