"""Container healthcheck: exit 0 when this container's service answers ``/healthz`` with 200.

``python -m services.core.healthcheck [URL]``; the default URL uses ``OPENCHAT_HTTP_PORT``.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main(argv: list[str]) -> int:
    url = (
        argv[1]
        if len(argv) > 1
        else f"http://127.0.0.1:{os.environ.get('OPENCHAT_HTTP_PORT', '8080')}/healthz"
    )
    if not url.startswith(("http://", "https://")):
        print(f"unhealthy: not an http URL: {url}", file=sys.stderr)
        return 2
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:  # noqa: S310 - scheme checked above
            return 0 if resp.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
