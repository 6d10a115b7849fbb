"""Remote voice participants in their own process, for ``bench_ui.py --voice``: N aiortc mesh peers
(tests/integration/voice_peers.py) join a devserver voice channel, each sending a tone, until stdin
closes (so their CPU is not counted as the app's).

    python -m bench.voice_peers_proc BASE_URL CHANNEL N
"""

from __future__ import annotations

import asyncio
import sys

from tests.integration.voice_peers import MeshPeer


async def main(base: str, channel: str, n: int) -> None:
    peers = [MeshPeer(f"uid_bench_{i}", 440 + 110 * i) for i in range(n)]
    for p in peers:
        await p.join(base, channel)
    print("JOINED", flush=True)
    await asyncio.to_thread(sys.stdin.read)  # until the bench closes our stdin
    for p in peers:
        await p.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
