"""`python -m simulator ...`: run a simulated community until Ctrl-C or `--duration`.

`python -m simulator pay ...` runs (or drives) the local payment provider instead
(simulator/payprovider.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
import contextlib
import logging
import signal
import sys

from simulator.config import SimConfig, parse_args
from simulator.runner import Community, SimulatorError


async def _run(config: SimConfig) -> None:
    community = Community(config)
    loop = asyncio.get_running_loop()
    stopping: set[asyncio.Task[None]] = set()

    def on_signal() -> None:
        task = asyncio.create_task(community.stop())
        stopping.add(task)
        task.add_done_callback(stopping.discard)

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
    await community.run()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator (or, with `pay`, the local payment provider); return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["pay"]:
        from simulator import payprovider  # noqa: PLC0415 - only the pay command needs aiohttp

        return payprovider.main(args[1:])
    config = parse_args(args)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(_run(config))
    except SimulatorError as err:
        print(f"simulator: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
