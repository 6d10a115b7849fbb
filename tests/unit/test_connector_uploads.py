"""Images staged in chunks before a send (``connector.upload``, ADR 0010)."""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path

import pytest

from services.connector.uploads import UploadStager
from services.core.bus import CommandError
from services.core.contracts.blobs import UploadChunkArgs

UID = "up_" + "a" * 32


def chunk(offset: int, data: bytes, total: int, upload_id: str = UID) -> UploadChunkArgs:
    return UploadChunkArgs(
        upload_id=upload_id, offset=offset, total=total, data_b64=base64.b64encode(data).decode()
    )


def test_in_order_per_member_bounded(tmp_path: Path) -> None:
    stager = UploadStager(tmp_path, member_max=100)
    data = os.urandom(30)

    async def run() -> None:
        first = await stager.append("alice", chunk(0, data[:20], 30))
        assert (first.received, first.complete) == (20, False)
        with pytest.raises(CommandError) as err:  # a repeated or skipped chunk
            await stager.append("alice", chunk(0, data[:20], 30))
        assert err.value.code == "upload_offset" and "20" in err.value.body.message
        last = await stager.append("alice", chunk(20, data[20:], 30))
        assert last.complete
        with pytest.raises(CommandError) as err:  # beyond the declared size
            await stager.append("alice", chunk(30, b"x", 30))
        assert err.value.code == "too_large"
        # another member cannot take alice's staged file
        with pytest.raises(CommandError) as err:
            await stager.take("bob", UID)
        assert err.value.code == "upload_not_found"
        assert await stager.take("alice", UID) == data
        stager.discard("alice", [UID])
        with pytest.raises(CommandError):
            await stager.take("alice", UID)
        # a member's staged bytes together are bounded
        await stager.append("alice", chunk(0, b"y" * 10, 60, "up_" + "b" * 32))
        with pytest.raises(CommandError) as err:
            await stager.append("alice", chunk(0, b"z" * 10, 95, "up_" + "c" * 32))
        assert err.value.code == "too_large"

    asyncio.run(run())
    assert (tmp_path / "alice").stat().st_mode & 0o077 == 0


def test_expired_uploads_are_swept(tmp_path: Path) -> None:
    stager = UploadStager(tmp_path, ttl_s=60)

    async def run() -> None:
        await stager.append("alice", chunk(0, b"old", 10))
        old = tmp_path / "alice" / f"{UID}.part"
        os.utime(old, (0, 0))
        await stager.append("alice", chunk(0, b"new", 3, "up_" + "d" * 32))
        assert not old.exists()

    asyncio.run(run())
