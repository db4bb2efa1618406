"""Review commands: serve (the web page), review (the queue in a terminal), decide, hash-password."""

from __future__ import annotations

import getpass
import textwrap
from dataclasses import replace
from datetime import UTC, datetime

import click

from aggregator.cli import App, main, pass_app
from aggregator.config import is_loopback_host
from aggregator.errors import ReviewError
from aggregator.review import Card, QueueQuery, Review

EDITOR_ENV = "AGGREGATOR_EDITOR"
_QUIT = {"q", "\x03", "\x04", ""}  # q, Ctrl-C, Ctrl-D, end of input

editor_option = click.option(
    "--editor",
    envvar=EDITOR_ENV,
    default=getpass.getuser,
    show_default="your login name",
    help=f"Name recorded with each decision (env {EDITOR_ENV}).",
)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
@pass_app
def serve(app: App, host: str, port: int) -> None:
    """Serve the review page and its JSON API (read-only until an editor signs in)."""
    import uvicorn

    from aggregator.web.app import create_app

    web = create_app(app.settings, app.storage)
    if not is_loopback_host(host):
        click.echo(
            f"note: listening on {host}: put the page behind HTTPS (a reverse proxy) so the session "
            "cookie and the editor token never cross the network in clear",
            err=True,
        )
    click.echo(f"review page on http://{host}:{port}/ (Ctrl-C stops)", err=True)
    uvicorn.run(web, host=host, port=port, log_level="warning", server_header=False)


@main.command()
@click.argument("item_id", type=int)
@click.option("--accept", is_flag=True, help="Accept the item's story.")
@click.option("--reject", is_flag=True, help="Reject the item's story.")
@click.option("--move", "move_to", metavar="SECTION", help="Move the story to SECTION (it stays queued).")
@click.option("--note", metavar="TEXT", help="Attach a note to the story.")
@click.option("--section", help="With --accept: the section (default: the story's current one).")
@click.option("--type", "item_type", help="With --accept: the type tag, e.g. 'Paper' (default: each item's own).")
@click.option("--reason", help="With --reject: why.")
@editor_option
@pass_app
def decide(
    app: App,
    item_id: int,
    accept: bool,
    reject: bool,
    move_to: str | None,
    note: str | None,
    section: str | None,
    item_type: str | None,
    reason: str | None,
    editor: str,
) -> None:
    """Decide on one item's story: --accept [--section S] [--type T] | --reject [--reason R] |
    --move S | --note TEXT. The decision is recorded on every item of the story."""
    wanted = {"accept": accept, "reject": reject, "move": move_to is not None, "note": note is not None}
    chosen = [verb for verb, given in wanted.items() if given]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --accept, --reject, --move SECTION, --note TEXT")
    verb = chosen[0]
    if (section or item_type) and verb != "accept":
        raise click.UsageError("--section and --type go with --accept (use --move SECTION to move)")
    if reason and verb != "reject":
        raise click.UsageError("--reason goes with --reject")
    review = Review.from_settings(app.settings, app.storage)
    outcome = review.decide(
        item_id, verb, editor, app.now(), section=move_to or section, item_type=item_type, reason=note or reason
    )
    card = review.card(item_id)
    members = len(outcome.item_ids)
    story = f"story {outcome.story_ids[0]}" + (f" ({members} items)" if members > 1 else "")
    click.echo(f"{_past(verb)} {story}: {card.stored.item.title} [{card.section} / {card.item_type or 'no type'}]")


@main.command("review")
@click.option("--section", help="Only this section.")
@click.option("--source", help="Only items from this source.")
@click.option("--type", "item_type", help="Only this type tag.")
@click.option("--text", help="Only items whose title or summary has these words.")
@editor_option
@pass_app
def review_command(
    app: App, section: str | None, source: str | None, item_type: str | None, text: str | None, editor: str
) -> None:
    """Walk the queue one story at a time with the page's keys (press ? for them)."""
    review = Review.from_settings(app.settings, app.storage)
    walk = _Walk(review, QueueQuery(section=section, source=source, item_type=item_type, text=text), editor)
    walk.run()


@main.command("hash-password")
def hash_password_command() -> None:
    """Make a password hash for review.editors in feeds.yaml (asks for the password twice)."""
    from aggregator.web.auth import hash_password

    password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    click.echo(hash_password(password))


class _Walk:
    """The terminal review loop: one card on screen, one key per action."""

    def __init__(self, review: Review, query: QueueQuery, editor: str) -> None:
        self.review = review
        self.query = query
        self.editor = editor
        self.position = 0

    def run(self) -> None:
        click.echo(self._keys())
        first = True
        while True:
            card = self._card()
            if card is None and self.position == 0:
                click.echo("the queue is empty" + (" under these filters" if self._filtered() else ""))
                if first:
                    return
                click.echo("(u: undo, q: quit)")
            elif card is None:
                click.echo("end of the queue (k: back, q: quit)")
            else:
                click.echo(self._show(card))
            key = click.getchar()
            if key in _QUIT:
                return
            first = False
            try:
                self._handle(key, card)
            except ReviewError as exc:
                click.echo(f"error: {exc}", err=True)

    def _card(self) -> Card | None:
        page = self.review.page(self.query, offset=self.position, limit=1)
        return page.cards[0] if page.cards else None

    def _handle(self, key: str, card: Card | None) -> None:
        now = datetime.now(UTC)
        if key in ("j", " "):
            self.position += 1 if card else 0
        elif key == "k":
            self.position = max(0, self.position - 1)
        elif key == "u":
            outcome = self.review.undo(self.editor, now)
            click.echo(f"undone: {len(outcome.story_ids)} story back in the queue")
        elif key == "/":
            words = click.prompt("search (empty: everything)", default="", show_default=False)
            self.query, self.position = replace(self.query, text=words or None), 0
        elif key == "?":
            click.echo(self._keys())
        elif card is not None:
            self._decide(key, card, now)

    def _decide(self, key: str, card: Card, now: datetime) -> None:
        categories = self.review.categories
        if key == "a":
            self.review.decide(card.id, "accept", self.editor, now)
            click.echo(f"accepted into {card.section}")
        elif key in ("r", "R"):
            reason = click.prompt("reason", default="", show_default=False) if key == "R" else None
            self.review.decide(card.id, "reject", self.editor, now, reason=reason or None)
            click.echo("rejected")
        elif key.isdigit() and 1 <= int(key) <= len(categories):
            target = categories[int(key) - 1]
            self.review.decide(card.id, "move", self.editor, now, section=target)
            click.echo(f"moved to {target}")
        elif key == "n":
            text = click.prompt("note")
            self.review.decide(card.id, "note", self.editor, now, reason=text)
            click.echo("noted")
        else:
            click.echo(f"no key {key!r}: press ? for the keys")

    def _show(self, card: Card) -> str:
        item, p = card.stored.item, card.prediction
        when = item.published or card.stored.first_seen
        why = f" (predicted {p.section or 'no section'} {p.confidence:.0%})" if p else ""
        lines = [
            "",
            click.style(f"#{self.position + 1}  [{card.item_type or 'no type'}] {item.title}", bold=True),
            f"    {item.url}",
            f"    {item.source} · {when:%Y-%m-%d} · {card.section}{why} · id {card.id}",
        ]
        if p and p.top_terms:
            lines.append(f"    because of: {', '.join(p.top_terms[:8])}")
        if card.note:
            lines.append(f"    note: {card.note}")
        lines += [f"    also: {o.item.source}: {o.item.title} <{o.item.url}>" for o in card.others]
        summary = textwrap.wrap(item.summary_text, 96, max_lines=5, placeholder=" …")
        lines += [f"    {line}" for line in summary]
        return "\n".join(lines)

    def _keys(self) -> str:
        moves = "  ".join(f"{n} {c}" for n, c in enumerate(self.review.categories[:9], 1))
        return (
            "keys: a accept · r reject (R with a reason) · " + moves + " (move) · n note · "
            "j/space next · k previous · u undo · / search · ? keys · q quit"
        )

    def _filtered(self) -> bool:
        return any((self.query.section, self.query.source, self.query.item_type, self.query.text))


def _past(verb: str) -> str:
    return {"accept": "accepted", "reject": "rejected", "move": "moved", "note": "noted"}[verb]

