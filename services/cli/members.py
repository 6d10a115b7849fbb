"""``openchat member add|list|remove|rotate``: the member registry and members' credentials."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from services.cli.home import Home
from services.core import natsconf
from services.core.bus import Bus, ConnectOptions
from services.core.contracts import subjects
from services.core.contracts.members import MEMBER_DATA_SERVICES, MemberRemoved
from services.core.identity import check_root
from services.core.members import ConnectionFile, Member
from services.core.rpc import remove_member_everywhere


def _write_connection_file(home: Home, member: Member, seed: str) -> Path:
    path = home.layout.connection_file(member.name)
    ConnectionFile(
        member=member.name,
        nats_url=home.member_nats_url(),
        nkey_seed=seed,
        inbox_prefix=subjects.inbox_prefix(member.name),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    ).write(path)
    return path


def add_member(
    home: Home, name: str, *, apply: bool = True, root: str | None = None, out: Callable[[str], None] = print
) -> Path:
    if root is not None:
        check_root(root)
    member, seed = home.registry.add(name)
    if root is None:
        home.identities.create(name)
    else:
        home.identities.put(name, root)
    path = _write_connection_file(home, member, seed)
    if apply:
        outcome = home.apply_to_nats()
    else:
        home.write_accounts()
        outcome = "takes effect when the stack starts"
    out(f"member {name} added ({outcome})")
    out(f"connection file: {path}")
    return path


def rotate_member(home: Home, name: str, out: Callable[[str], None] = print) -> Path:
    member, seed = home.registry.rotate(name)
    path = _write_connection_file(home, member, seed)
    out(f"member {name}: new credentials ({home.apply_to_nats()}); the old connection file no longer works")
    out(f"connection file: {path}")
    return path


def remove_member(home: Home, name: str, out: Callable[[str], None] = print) -> None:
    """Remove the member from the registry (its credentials stop working), then ask every service
    to forget what it keeps of the member (``oc.sys.member.remove.<service>``); a service not
    running forgets at its next start (the registry remembers the removal)."""
    home.registry.remove(name)
    home.identities.delete(name)
    home.layout.connection_file(name).unlink(missing_ok=True)
    out(f"member {name} removed ({home.apply_to_nats()})")
    for service, outcome in _ask_services_to_forget(home, name).items():
        if isinstance(outcome, MemberRemoved):
            what = ", ".join(f"{k} {v}" for k, v in outcome.removed.items() if v) or "nothing kept"
            out(f"  {service}: forgotten ({what})")
        else:
            out(f"  {service}: not reached ({outcome}); it forgets {name} at its next start")


def _ask_services_to_forget(home: Home, name: str) -> dict[str, MemberRemoved | str]:
    url = home.nats_url()
    password = home.secret_env.get(natsconf.SERVICE_PASSWORD_VAR)
    if url is None or not password:
        return dict.fromkeys(MEMBER_DATA_SERVICES, "no stack is running")

    async def ask() -> dict[str, MemberRemoved | str]:
        opts = ConnectOptions(
            url=url, user=home.settings.service_user, password=password, name="cli-member-remove"
        )
        bus = await Bus.connect(opts, first_attempts=1)
        try:
            return await remove_member_everywhere(bus, name)
        finally:
            await bus.close()

    try:
        return asyncio.run(asyncio.wait_for(ask(), 60))
    except Exception as exc:  # the stack is not reachable: each service forgets at its next start
        return dict.fromkeys(MEMBER_DATA_SERVICES, f"bus unreachable: {type(exc).__name__}")
