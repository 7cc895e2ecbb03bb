"""Benchmark: the community figures and operator lists, recomputed from memory.

    .venv/bin/python -m benchmarks.bench_lists            # 5,000 households

The Home Assistant adapter recomputes `Community.totals()` and `views.community_lists()` when
the community sensors are written (every 2 s in a small community; a large one's at most every
30 s unless a supply, alarm or assignment changed). This times both on a community of
households of which a tenth are in electricity arrears, a seventh in property-fee arrears,
one in fifty cut and one in thirty offline.
"""

from __future__ import annotations

import argparse
from decimal import Decimal
from pathlib import Path
import tempfile
import timeit

from custom_components.prepaid_meter.engine.ledger import Ledger, SubAccount
from custom_components.prepaid_meter.engine.views import community_lists
from tests.engine.test_community import NOON, Clock, _community


def main() -> None:
    """Build the community, then time each recomputation."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--households", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, Ledger(Path(folder) / "c.sqlite3") as ledger:
        community = _community(ledger, Clock(NOON))
        for n in range(args.households):
            meter_id = f"{n:012d}"
            info = community.assign_meter(meter_id, f"h{n}", f"Household {n}")
            community.apply_assignment(meter_id, info)
        for n, household in enumerate(community.households.values()):
            if n % 10 == 0:
                household.balances[SubAccount.ELECTRICITY] = Decimal("-1.2345")
            if n % 7 == 0:
                household.balances[SubAccount.PROPERTY_FEE] = Decimal(-30)
        for n, meter in enumerate(community.meters.values()):
            meter.desired_relay = "off" if n % 50 == 0 else "on"
            meter.online = n % 30 != 0
        totals = timeit.timeit(community.totals, number=args.repeat) / args.repeat
        lists = timeit.timeit(lambda: community_lists(community), number=args.repeat)
        print(
            f"{args.households} households: totals {totals * 1000:.2f} ms, "
            f"lists {lists / args.repeat * 1000:.2f} ms per recomputation"
        )


if __name__ == "__main__":
    main()
