"""The reply-subject rule of the services (ADR 0007) and the services' NATS users."""

from __future__ import annotations

import pytest

from services.core import natsconf
from services.core.contracts import subjects

ALLOWED = [
    "_INBOX_alice.2YlGe3kKq9sN0bXwTqAzPe.1",  # nats-py request inbox of alice's connection
    "_INBOX_alice.marker.state",
    "_INBOX_svc.kJd83hDk2Lq0.7",  # a service calling another for alice (notification -> connector)
]
REFUSED = [
    "_INBOX_bob.2YlGe3kKq9sN0bXwTqAzPe.1",  # another member's inbox
    "oc.bob.evt.srv_a.message.created",  # another member's events
    "oc.alice.evt.srv_a.message.created",  # even the caller's own events (forged events)
    "oc.sys.ev.bob.srv_a.message.created",  # the ingest subjects
    "oc.sys.connector.rehydrate",
    "oc.bob.cmd.state.servers",
    "$JS.API.STREAM.PURGE.OC_EVENTS",
    "$JS.API.STREAM.DELETE.OC_EVENTS",
    "$KV.bucket.key",
    "$SYS.REQ.SERVER.PING",
    "_INBOX.2YlGe3kKq9sN0bXwTqAzPe.1",  # nats-py's default prefix: no member subscribes there
    "_INBOX_alice",  # the bare prefix
    "_INBOX_alicex.1",  # a longer name sharing the prefix
    "_INBOX_alice.>",
    "_INBOX_alice.*",
    "_INBOX_alice..x",
    "_INBOX_alice.x y",
    " _INBOX_alice.x",
    "_INBOX_alice." + "a" * 300,
    "",
]


@pytest.mark.parametrize("reply", ALLOWED)
def test_own_and_service_inboxes_are_allowed(reply: str) -> None:
    assert subjects.reply_allowed("alice", reply)


@pytest.mark.parametrize("reply", REFUSED)
def test_everything_else_is_refused(reply: str) -> None:
    assert not subjects.reply_allowed("alice", reply)


def test_each_service_has_its_own_user_without_members_subjects() -> None:
    conf = natsconf.render_accounts_conf([])
    for service in subjects.SERVICES:
        user = natsconf.user_of_service(service)
        assert user == f"svc-{service}"
        assert f'user: "{user}"' in conf
        perms = natsconf.service_permissions(service)
        assert perms["allow_responses"] == {"max": 1, "expires": natsconf.RESPONSE_WINDOW}
        allowed = natsconf.SERVICE_PUBLISH[service]
        # No service may publish into members' events, inboxes or the JetStream API at large.
        # The one exception: the media service's speaking changes, on core NATS only (ADR 0011).
        evt = [s for s in allowed if ".evt." in s]
        assert evt == ([natsconf.SPEAKING_SUBJECTS] if service == "media" else [])
        # KV: only the buckets of its own leases (issue 16, ADR 0021), never $KV at large
        kv = [
            s
            for s in allowed
            if s.startswith(("$KV.", "$JS.API.DIRECT.GET.KV_", "$JS.API.STREAM.MSG.GET.KV_"))
        ]
        buckets = {"connector": ("oc_connector_leases", "oc_connector_replicas")}.get(
            service, ("oc_service_leases",)
        )
        assert all(any(f"KV_{b}" in s or f"$KV.{b}." in s for b in buckets) for s in kv), kv
        rest = [s for s in allowed if s not in evt and s not in kv]
        assert not any(s.startswith(("oc.*.evt", "_INBOX", ">", "$JS.API.>", "$KV", "$SYS")) for s in rest)
    assert natsconf.user_of_service("tool") == "svc"
    # The event producers may ingest (the state service re-announces joins after a rebuild).
    for service in ("connector", "state", "notification"):
        assert "oc.sys.>" in natsconf.SERVICE_PUBLISH[service]
