"""Stage composition: sources produce iterators, transforms map iterators to iterators, sinks
consume them. ``Stream(source) | transform | sink`` reads top to bottom; `run` drains it.

    steps = Stream(envpool_actor(...))
    run(steps | take(1000) | writer_stage)
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Iterable, Iterator


class Stream:
    """An iterator that composes with ``|``: ``stream | stage`` is ``Stream(stage(stream))``."""

    def __init__(self, source: Iterable):
        self._it = iter(source)

    def __iter__(self) -> Iterator:
        return self._it

    def __next__(self) -> Any:
        return next(self._it)

    def __or__(self, stage: Callable[[Iterator], Iterable]) -> "Stream":
        return Stream(stage(self._it))

    def close(self) -> None:
        """Closes the underlying generator chain, so that sinks finish cleanly (e.g. a dataset
        writer closes its files) when the consumer stops early."""
        close = getattr(self._it, "close", None)
        if close is not None:
            close()


def take(n: int) -> Callable[[Iterator], Iterator]:
    """Transform: the first n items."""
    return lambda it: itertools.islice(it, n)


def tap(fn: Callable[[Any], None]) -> Callable[[Iterator], Iterator]:
    """Transform: calls fn on each item (metrics, counters) and passes it on unchanged."""

    def stage(it):
        for item in it:
            fn(item)
            yield item

    return stage


def every(period: int, fn: Callable[[Any], None], count: Callable[[Any], int] = lambda item: item.step,
          start: int = 0, final: int | None = None) -> Callable[[Iterator], Iterator]:
    """Transform: calls fn(item) whenever count(item) has reached the next multiple of `period` after
    `start` (0: never), and when count(item) == final; passes every item on. A resumed run passes its
    restored count as `start` and keeps the same schedule."""

    def stage(it):
        due = (start // period + 1) * period if period else None
        for item in it:
            n = count(item)
            if (due is not None and n >= due) or (final is not None and n == final):
                fn(item)
                if due is not None and n >= due:
                    due = (n // period + 1) * period
            yield item

    return stage


def until(stop: Callable[[Any], bool]) -> Callable[[Iterator], Iterator]:
    """Transform: passes items on up to and including the first for which stop(item) is true."""

    def stage(it):
        for item in it:
            yield item
            if stop(item):
                return

    return stage


def last(stream: Iterable, default: Any = None) -> Any:
    """Sink: drains the stream, returns its last item (`default` if it had none)."""
    item = default
    for item in stream:
        pass
    return item


def run(stream: Iterable) -> int:
    """Sink: drains the stream, returns how many items passed."""
    count = 0
    for _ in stream:
        count += 1
    return count
