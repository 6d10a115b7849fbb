"""Remote voice participants in their own process, for ``bench_ui.py --voice``: N aiortc mesh peers
(tests/integration/voice_peers.py) join a devserver voice channel, each sending a tone, until stdin
closes (so their CPU is not counted as the app's).  With ``ONLY_UID`` they connect only with that
user (the member measured), not with each other: every one of them stands for another member's
machine, so their mesh among themselves is nothing the measured machine would carry.

    python -m bench.voice_peers_proc BASE_URL CHANNEL N [ONLY_UID]
"""

from __future__ import annotations

import asyncio
import sys

from tests.integration.voice_peers import MeshPeer


async def main(base: str, channel: str, n: int, only_uid: str | None = None) -> None:
    only = {only_uid} if only_uid else None
    peers = [MeshPeer(f"uid_bench_{i}", 440 + 110 * i, only_uids=only) for i in range(n)]
    for p in peers:
        await p.join(base, channel)
    print("JOINED", flush=True)
    await asyncio.to_thread(sys.stdin.read)  # until the bench closes our stdin
    for p in peers:
        await p.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None))
