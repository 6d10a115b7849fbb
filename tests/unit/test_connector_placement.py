"""Placement of connector sessions over replicas and the holder's lease clock (pure, issue 16)."""

from __future__ import annotations

from services.connector.placement import LeaseClock, owner, plan
from services.core.contracts.cluster import lease_key, parse_lease_key

KEYS = [f"m{i}.srv_{j}" for i in range(50) for j in range(4)]


def test_every_replica_computes_the_same_owner_and_the_spread_is_fair() -> None:
    replicas = ["connector-1-a", "connector-2-b"]
    owners = [owner(k, replicas) for k in KEYS]
    assert owners == [owner(k, list(reversed(replicas))) for k in KEYS]
    share = owners.count("connector-1-a") / len(KEYS)
    assert 0.35 < share < 0.65
    assert owner("x.y", []) is None


def test_a_joining_replica_takes_only_its_share_and_a_leaving_one_gives_only_its_own() -> None:
    two = ["r1", "r2"]
    three = ["r1", "r2", "r3"]
    moved = [k for k in KEYS if owner(k, two) != owner(k, three)]
    assert all(owner(k, three) == "r3" for k in moved)  # nothing moves between r1 and r2
    assert 0.2 < len(moved) / len(KEYS) < 0.45
    gone = [k for k in KEYS if owner(k, three) != owner(k, ["r1", "r3"])]
    assert all(owner(k, three) == "r2" for k in gone)


def test_plan_acquires_what_it_should_hold_releases_what_another_should_and_drops_the_gone() -> None:
    live = ["r1", "r2"]
    mine = {k for k in KEYS if owner(k, live) == "r1"}
    theirs = {k for k in KEYS if owner(k, live) == "r2"}
    held = {next(iter(theirs)), "gone.srv_x"}
    p = plan("r1", set(KEYS), held, live)
    assert set(p.acquire) == mine
    assert p.release == [next(iter(theirs))]
    assert p.drop == ["gone.srv_x"]
    alone = plan("r1", set(KEYS), set(), [])  # r1 always counts itself as live
    assert set(alone.acquire) == set(KEYS)


def test_the_holder_stops_before_the_server_can_expire_the_lease() -> None:
    clock = LeaseClock(ttl_s=6.0, sent_at=100.0, revision=7)
    assert not clock.must_stop(103.9)
    assert clock.must_stop(104.0)  # 2/3 of the TTL after the last confirmed renewal was sent
    assert clock.renew_due(101.5, 1.5) and not clock.renew_due(101.0, 1.5)
    clock.confirmed(103.0, 8)
    assert not clock.must_stop(106.0) and clock.revision == 8


def test_lease_keys_round_trip_and_refuse_foreign_shapes() -> None:
    assert parse_lease_key(lease_key("alice", "srv_family")) == ("alice", "srv_family")
    assert parse_lease_key("no-dot") is None
    assert parse_lease_key("Alice.srv") is None
