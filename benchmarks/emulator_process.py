"""The portal emulator in a process of its own, for the benchmarks.

    python benchmarks/emulator_process.py [--rate-limit BURST/RATE] [--extra-deals N]

Serves `seeded_portal()` over plain HTTP on a free loopback port (`serve_portal`, uvicorn in a thread), prints its
origin (`http://127.0.0.1:PORT`) as the first line on stdout, then reads commands from stdin, one a line, each
answered with one JSON line on stdout:

- `stats`: what the emulator has received so far (top-level HTTP requests by method, `batch` sub-commands by
  method, `QUERY_LIMIT_EXCEEDED` refusals) and how many of the extra deals are still there;
- `ids`: the ids of the extra deals.

It stops when its stdin closes, so it never outlives the benchmark that started it. Without `--rate-limit` the
portal has no request limit; the real portal's is `50/2` (a leaky bucket of 50, draining 2 per second).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from typing import Any

from b24_mcp.sandbox.emulator import Portal
from b24_mcp.sandbox.seed import seeded_portal
from b24_mcp.sandbox.serve import serve_portal

DEAL = 2


def parse_rate_limit(text: str) -> tuple[int, float]:
    """`BURST/RATE`, e.g. `50/2`."""
    burst, _, rate = text.partition("/")
    return int(burst), float(rate)


def add_deals(portal: Portal, count: int) -> list[int]:
    """`count` extra deals to delete, on top of the seeded ones."""
    fields = {"stageId": "NEW", "currencyId": "USD", "assignedById": 1, "categoryId": 0}
    return [
        portal.add_item(DEAL, fields | {"title": f"Bench deal {i}", "opportunity": float(i)})["id"]
        for i in range(count)
    ]


def stats(portal: Portal, extra_ids: list[int]) -> dict[str, Any]:
    """What the portal has received so far, and how many extra deals remain."""
    calls = list(portal.calls)  # a snapshot: the server thread appends to the log
    deals = portal.items[DEAL]
    return {
        "requests": Counter(call.method for call in calls if not call.via_batch),
        "batch_subcommands": Counter(call.method for call in calls if call.via_batch),
        "query_limit_exceeded": sum(1 for call in calls if call.error == "QUERY_LIMIT_EXCEEDED"),
        "extra_remaining": sum(1 for item_id in extra_ids if item_id in deals),
    }


def main() -> int:
    """Serve until stdin closes, answering `stats` and `ids` on the way."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate-limit", type=parse_rate_limit, default=None, metavar="BURST/RATE")
    parser.add_argument("--extra-deals", type=int, default=0, metavar="N")
    args = parser.parse_args()
    portal = seeded_portal(require_https=False, rate_limit=args.rate_limit)
    extra_ids = add_deals(portal, args.extra_deals)
    with serve_portal(portal) as origin:
        print(origin, flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command == "stats":
                answer: Any = stats(portal, extra_ids)
            elif command == "ids":
                answer = extra_ids
            else:
                answer = {"error": f"unknown command {command!r}"}
            print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
