"""``advbench concepts`` on several cores: reports in chunks to a pool of worker processes,
output lines back in input order.

Extraction is CPU-bound Python, so threads would share one core. Each worker loads the lexicon
once (its compiled regex comes from the on-disk cache) and returns finished JSON lines, so the
main process only reads input and writes output. At most two chunks per worker are in flight,
so memory does not grow with the input.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from itertools import islice

CHUNK = 500  # reports per task: large enough to hide the pickling, small enough to balance


def extract_lines(pairs: Iterable[tuple[str, str]]) -> list[str]:
    """One ``advbench concepts`` JSON line per ``(id, text)``, in order (orjson: the lines
    are a fifth of a worker's time with the standard library's encoder)."""
    import orjson

    from advbench.concepts.extract import extract

    dumps = orjson.dumps
    return [dumps(extract(text).to_dict(report_id)).decode() for report_id, text in pairs]


def extract_in_order(pairs: Iterable[tuple[str, str]], workers: int) -> Iterator[str]:
    """JSON lines for every ``(id, text)``, in input order, on ``workers`` processes."""
    items = iter(pairs)
    if workers <= 1:
        while chunk := list(islice(items, CHUNK)):
            yield from extract_lines(chunk)
        return
    from advbench.workers import process_pool, result_of

    with process_pool(workers) as pool:
        waiting: deque[Future[list[str]]] = deque()
        while True:
            while len(waiting) < 2 * workers and (chunk := list(islice(items, CHUNK))):
                waiting.append(pool.submit(extract_lines, chunk))
            if not waiting:
                return
            yield from result_of(waiting.popleft())
