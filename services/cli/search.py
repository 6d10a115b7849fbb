"""``openchat search``: search every message of the member's servers (issue 17).

A thin bus client like every chat command: it sends ``oc.<member>.cmd.state.search``
(``services.core.contracts.search``) with the member's own credentials, so it can only ever search
that member's servers; the query is parsed and run by the state service.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click

from services.cli.chat import MemberClient, connection_option, json_option, member_option, run
from services.core.contracts import commands as cmd
from services.core.contracts.search import (
    DEFAULT_SEARCH_LIMIT,
    MAX_SEARCH_LIMIT,
    SearchArgs,
    SearchHit,
    SearchResult,
)

SEARCH_TIMEOUT_S = 15.0


def parse_when(value: str | None, what: str) -> datetime | None:
    """``2026-12-01`` (midnight UTC) or an ISO 8601 time (without a zone: UTC)."""
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a date (2026-12-01) or an ISO time", param_hint=what
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def hit_line(h: SearchHit) -> str:
    when = h.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    return f"{when}  {h.server_id} #{h.channel_id}  {h.author_uid}: {h.snippet}  ({h.message_id})"


def hit_rows(result: SearchResult) -> list[dict[str, object]]:
    return [h.model_dump(mode="json") for h in result.hits]


def register(main: click.Group) -> None:
    @main.command()
    @click.argument("query")
    @click.option("--server", "server_id", help="Only this server.")
    @click.option("--channel", "channel_id", help="Only this channel.")
    @click.option("--from", "from_uid", help="Only messages of this author (user id).")
    @click.option("--after", help="Only messages from this time on (2026-12-01 or ISO time; UTC).")
    @click.option("--before", help="Only messages before this time (2026-12-01 or ISO time; UTC).")
    @click.option(
        "--limit",
        default=DEFAULT_SEARCH_LIMIT,
        show_default=True,
        type=click.IntRange(1, MAX_SEARCH_LIMIT),
    )
    @member_option
    @connection_option
    @json_option
    def search(
        query: str,
        server_id: str | None,
        channel_id: str | None,
        from_uid: str | None,
        after: str | None,
        before: str | None,
        limit: int,
        member: str | None,
        connection: Path | None,
        as_json: bool,
    ) -> None:
        """Search every message of your servers, newest first.

        QUERY: words (all must match), "exact phrases", prefix*, from:UID, in:CHANNEL,
        in:SERVER/CHANNEL, in:SERVER/. Matches are marked «like this»."""
        args = SearchArgs(
            query=query,
            server_id=server_id,
            channel_id=channel_id,
            from_uid=from_uid,
            after=parse_when(after, "--after"),
            before=parse_when(before, "--before"),
            limit=limit,
        )

        async def work(c: MemberClient) -> SearchResult:
            return await c.call(cmd.SEARCH, args, timeout=SEARCH_TIMEOUT_S)

        result: SearchResult = run(member, connection, work)
        if not result.caught_up:
            click.echo("(the search index is still catching up: results may be incomplete)", err=True)
        if as_json:
            click.echo(json.dumps(hit_rows(result), indent=2, ensure_ascii=False))
            return
        for h in result.hits:
            click.echo(hit_line(h))
        if not result.hits:
            click.echo("no messages found", err=True)
        elif result.has_more:
            click.echo(f"(more than {limit}: narrow the query or raise --limit)", err=True)
