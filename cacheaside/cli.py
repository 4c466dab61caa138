"""Command line: ``cacheaside demo [--redis URL [--cluster]]`` (also ``python -m cacheaside demo``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cacheaside", description="The cache-aside pattern, one decorator away.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a cached workload against a slow in-memory database")
    demo.add_argument("--redis", metavar="URL", help="run on Redis instead of process memory")
    demo.add_argument("--cluster", action="store_true", help="the --redis URL is a node of a Redis Cluster")
    demo.add_argument("--ops", type=int, default=400, help="operations in the workload (default 400)")
    args = parser.parse_args(argv)
    if args.cluster and not args.redis:
        parser.error("--cluster needs --redis URL (the URL of any node of the cluster)")
    from .demo import run

    return run(args.redis, ops=args.ops, cluster=args.cluster)


if __name__ == "__main__":
    raise SystemExit(main())
