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
from services.core.tls import is_loopback_host, url_host


def _write_connection_file(home: Home, member: Member, seed: str) -> Path:
    path = home.layout.connection_file(member.name)
    ConnectionFile(
        member=member.name,
        nats_url=home.member_nats_url(),
        nkey_seed=seed,
        inbox_prefix=subjects.inbox_prefix(member.name),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        ca_pem=home.member_ca_pem(),
    ).write(path)
    return path


def refresh_local_connection_files(home: Home, url: str, out: Callable[[str], None] = print) -> None:
    """Without a public URL, connection files name this machine's stack (a loopback URL whose
    port ``openchat up`` may pick anew each start): point them at the running one."""
    if home.settings.public_nats_url:
        return
    for path in sorted(home.layout.members_dir.glob("*.json")):
        try:
            cf = ConnectionFile.read(path)
        except (OSError, ValueError):
            continue
        host = url_host(cf.nats_url)
        if cf.nats_url != url and host is not None and is_loopback_host(host):
            cf.model_copy(update={"nats_url": url, "ca_pem": home.local_ca_pem(url)}).write(path)
            out(f"connection file of {cf.member} now points at {url}")


def print_handover(home: Home, name: str, path: Path, out: Callable[[str], None]) -> None:
    """What the member copies to their computer, and the one command they run there."""
    url = home.member_nats_url()
    out(f"connection file: {path}")
    out(f"  copy it to {name}'s computer (keep it private: it is {name}'s password), then run there:")
    out(f"    openchat ui --connection {path.name}")
    out(f"  (on this machine: openchat ui --member {name})")
    out(
        f"  it connects to {url}"
        + (" with TLS, trusting only this home's CA (in the file)" if url.startswith("tls://") else "")
    )
    if not url.startswith("tls://") and home.settings.public_nats_url is None:
        out("  note: OPENCHAT_PUBLIC_NATS_URL is not set, so this file works on this machine only")


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
    print_handover(home, name, path, out)
    return path


def rotate_member(home: Home, name: str, out: Callable[[str], None] = print) -> Path:
    member, seed = home.registry.rotate(name)
    path = _write_connection_file(home, member, seed)
    out(f"member {name}: new credentials ({home.apply_to_nats()}); the old connection file no longer works")
    print_handover(home, name, path, out)
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
            url=url,
            user=home.settings.service_user or natsconf.user_of_service("cli"),  # the tools' user
            password=password,
            name="cli-member-remove",
            ca_pem=home.local_ca_pem(url),
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
