"""Storage quotas per member and per (member, server) (``services/connector/quota.py``)."""

from __future__ import annotations

from services.connector.quota import DAY_S, QuotaLimits, StorageQuota, check_fit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


LIMITS = QuotaLimits(
    server_burst_bytes=1000, server_bytes_per_day=500, member_burst_bytes=1500, member_bytes_per_day=1000
)


def test_a_server_is_bounded_by_its_burst_and_refills_at_its_rate() -> None:
    clock = Clock()
    quota = StorageQuota(LIMITS, clock)
    assert all(quota.admit("alice", "s1", 100) for _ in range(10))
    assert not quota.admit("alice", "s1", 100)
    assert quota.refused_events == 1
    wait = quota.retry_after("alice", "s1", 100)
    assert abs(wait - 100 / 500 * DAY_S) < 1e-6
    clock.now += wait
    assert quota.admit("alice", "s1", 100)
    assert not quota.admit("alice", "s1", 1)


def test_one_server_cannot_spend_another_members_quota_but_shares_its_members() -> None:
    quota = StorageQuota(LIMITS, Clock())
    assert quota.admit("alice", "s1", 1000)
    assert quota.admit("alice", "s2", 500)  # alice's member bucket: 1500 spent
    assert not quota.admit("alice", "s3", 1)  # her third server: her own member bucket is empty
    assert quota.admit("bob", "s1", 1000)  # bob is untouched, same server id or not


def test_admission_is_all_or_nothing_and_oversize_never_fits() -> None:
    quota = StorageQuota(LIMITS, Clock())
    assert quota.admit("alice", "s1", 900)
    assert not quota.admit("alice", "s1", 200)  # the server bucket lacks it: the member one keeps its bytes
    assert quota.level("alice", "s1") == (100, 600)
    assert not quota.fits(1001) and quota.fits(1000)
    assert quota.retry_after("alice", "s1", 2000) == float("inf")


def test_recovered_after_an_episode_and_forget() -> None:
    clock = Clock()
    quota = StorageQuota(LIMITS, clock)
    assert quota.admit("alice", "s1", 1000)
    assert not quota.recovered("alice", "s1")
    clock.now += 0.25 * DAY_S  # +125 server bytes (of 1000), +250 member bytes
    assert quota.recovered("alice", "s1")
    quota.forget("alice", "s1")
    assert quota.level("alice", "s1")[0] == 1000


def test_zero_turns_a_bucket_off_and_check_fit_sums_members() -> None:
    quota = StorageQuota(QuotaLimits(0, 0, 0, 0), Clock())
    assert quota.admit("alice", "s1", 10**9) and quota.fits(10**9)
    assert check_fit(LIMITS, 2, 2 * (1500 + 30 * 1000), 30) is None
    warning = check_fit(LIMITS, 3, 2 * (1500 + 30 * 1000), 30)
    assert warning is not None and "3 members" in warning
    assert check_fit(QuotaLimits(0, 0, 0, 0), 1, 10**9, 30) is not None
