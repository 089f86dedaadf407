"""When a shard has been read to its end, and when an iterator must be renewed (pure).

What DynamoDB Streams promises (GetRecords, in the DynamoDB Streams API reference):

- "If there are no stream records available in the portion of the shard that the iterator
  points to, GetRecords returns an empty list. Note that it might take multiple calls to get
  to a portion of the shard that contains stream records." An empty page therefore says
  nothing about what lies further on: the reader must follow ``NextShardIterator``.
- "NextShardIterator: ... If set to null, the shard has been closed and the requested
  iterator will not return any more data." A closed shard is done only then.
- A shard iterator expires 15 minutes after it is returned.

An open shard never ends. ``stream --once`` calls it drained after a run of consecutive empty
pages at least ``empty_pages`` long and at least ``seconds`` long (both the user's to set):
long enough to walk past empty stretches of the shard, and to see records written while the
run went on. The report says of each shard how it ended: closed, or drained after that run.
"""

from __future__ import annotations

from dataclasses import dataclass

ITERATOR_LIFETIME_SECONDS = 15 * 60.0
# Renewed before that, so that a GetRecords call never carries an iterator about to expire.
ITERATOR_RENEW_SECONDS = 14 * 60.0


@dataclass(frozen=True)
class DrainRule:
    """How long a run of empty pages must be before an open shard counts as drained."""

    empty_pages: int = 12
    seconds: float = 3.0
    # Pause between empty pages while draining: DynamoDB Streams serves about five GetRecords
    # calls a second per shard.
    page_interval: float = 0.25


@dataclass
class ShardCursor:
    """Where the reader of one shard is: the iterator it holds, and the current run of empty
    pages (counted from the first empty page after the last record)."""

    iterator: str
    obtained_at: float  # clock() when the service returned the iterator
    empty_pages: int = 0
    empty_since: float | None = None

    def must_renew(self, now: float) -> bool:
        return now - self.obtained_at >= ITERATOR_RENEW_SECONDS

    def advance(self, next_iterator: str, had_records: bool, now: float) -> None:
        """Take the page's NextShardIterator (a fresh iterator) and count the page."""
        self.iterator = next_iterator
        self.obtained_at = now
        if had_records:
            self.empty_pages, self.empty_since = 0, None
        else:
            self.empty_pages += 1
            if self.empty_since is None:
                self.empty_since = now

    def drained(self, rule: DrainRule, now: float) -> bool:
        return (
            self.empty_since is not None
            and self.empty_pages >= rule.empty_pages
            and now - self.empty_since >= rule.seconds
        )

    def drained_description(self, now: float) -> str:
        seconds = now - (self.empty_since if self.empty_since is not None else now)
        return f"open: no records after {self.empty_pages} empty pages in {seconds:.1f} s"


CLOSED = "closed: read to its end"
