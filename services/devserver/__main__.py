"""Command line of the devserver: ``python -m services.devserver [options]``.

Without options it is the public backend exactly (both seed servers, capabilities for
``srv_harbor``, development mode, port 8080).  The public backend's environment variables
(``OPENCHAT_HTTP_ADDR``, ``OPENCHAT_PUBLIC_BASE_URL``, ``OPENCHAT_ENV``,
``OPENCHAT_JOIN_TICKET_TTL_SECONDS``, ``OPENCHAT_JOIN_TICKET_SECRET``, ``OPENCHAT_SIGNALING_PATH``)
are honoured (wire §14); flags win over them.  A development and demo tool only: it is never part
of the stack in production.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import uvicorn

from services.devserver.config import FEATURES, LIMIT_NAMES, SEEDS, DevserverConfig
from services.devserver.transport import uvicorn_ws_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m services.devserver",
        description="Reference OpenChat backend (the public Go backend's behaviour, plus optional Profile B features).",
    )
    parser.add_argument("--host", help="listen host (default from OPENCHAT_HTTP_ADDR, else 0.0.0.0)")
    parser.add_argument("--port", type=int, help="listen port (default from OPENCHAT_HTTP_ADDR, else 8080)")
    parser.add_argument("--server-id", help="id of the single seeded server (not with --seed public)")
    parser.add_argument("--name", help="display name of the seeded server and the capabilities' server_name")
    parser.add_argument("--seed", choices=SEEDS, default="public", help="seed data (default: public)")
    parser.add_argument("--state-file", type=Path, help="keep state in this JSON file across restarts")
    parser.add_argument("--public-base-url", help="origin of attachment/avatar/signaling URLs")
    parser.add_argument("--env", choices=("development", "production"), help="identity mode (OPENCHAT_ENV)")
    parser.add_argument(
        "--feature",
        action="append",
        default=[],
        metavar="NAME",
        help=f"switch on a Profile B feature (repeatable): {', '.join(sorted(FEATURES))}",
    )
    parser.add_argument("--features", default="", metavar="A,B", help="comma-separated Profile B features")
    parser.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"advertise another capability limit, for tests (repeatable): {', '.join(LIMIT_NAMES)}",
    )
    parser.add_argument("--admin", action="store_true", help="enable the /_admin surface")
    parser.add_argument("--log-level", default="warning", help="uvicorn log level (default: warning)")
    return parser


def parse_limits(items: Sequence[str]) -> dict[str, int]:
    """``["max_message_bytes=10", ...]`` → ``{"max_message_bytes": 10}`` (exits on a bad item)."""
    out: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in LIMIT_NAMES or not value.strip().isdigit():
            raise SystemExit(
                f"bad --limit {item!r}: use NAME=VALUE (integer ≥ 0), NAME one of {', '.join(LIMIT_NAMES)}"
            )
        out[name] = int(value)
    return out


def config_from_args(args: argparse.Namespace, env: dict[str, str] | None = None) -> DevserverConfig:
    environ = dict(os.environ if env is None else env)
    features = set(args.feature) | {f.strip() for f in args.features.split(",") if f.strip()}
    unknown = features - FEATURES
    if unknown:
        raise SystemExit(
            f"unknown feature(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(FEATURES))}"
        )
    overrides: dict[str, object] = {"seed": args.seed, "features": frozenset(features), "admin": args.admin}
    if args.limit:
        overrides["limits"] = parse_limits(args.limit)
    if args.host is not None:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    if args.server_id:
        overrides["server_id"] = args.server_id
    if args.name:
        overrides["name"] = args.name
    if args.state_file is not None:
        overrides["state_file"] = args.state_file
    if args.public_base_url:
        overrides["public_base_url"] = args.public_base_url
    if args.env:
        overrides["production"] = args.env == "production"
    cfg = DevserverConfig.from_env(environ, **overrides)
    if not args.public_base_url and not environ.get("OPENCHAT_PUBLIC_BASE_URL", "").strip():
        # The Go default is http://localhost:8080; follow the port so URLs stay reachable.
        cfg = replace(cfg, public_base_url=f"http://localhost:{cfg.port}")
    if cfg.seed == "public" and cfg.server_id:
        raise SystemExit("--server-id needs a single-server seed (--seed harbor|testlab|family|empty)")
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    from services.devserver.app import create_app

    app = create_app(cfg)
    print(
        f"openchat devserver on http://{cfg.host}:{cfg.port} seed={cfg.seed} "
        f"features={','.join(sorted(cfg.features)) or '-'} admin={cfg.admin} "
        f"mode={'production' if cfg.production else 'development'}",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(
        app,
        host=cfg.host,
        port=cfg.port,
        log_level=args.log_level,
        access_log=not cfg.production and args.log_level in ("debug", "info"),
        lifespan="on",
        timeout_graceful_shutdown=10,
        server_header=False,
        **uvicorn_ws_settings(),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
