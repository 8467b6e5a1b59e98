"""``netshrink keys create [--name N]`` / ``netshrink keys list``: manage API keys in the job store.

``create`` prints the bearer key and its ``whsec_`` webhook signing secret exactly once; only the
key's sha256 is stored (``service/auth.py`` explains why that suffices). The store is the one the
server uses (``NETSHRINK_REDIS_URL`` or the SQLite file under ``NETSHRINK_DATA_DIR``).
Ref: docs/api.md "Auth and limits".
"""

from __future__ import annotations

import argparse
import sys

from netshrink.service.auth import generate_key
from netshrink.workers.settings import WorkerSettings
from netshrink.workers.store import get_store


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Attach ``create`` and ``list`` sub-commands to the ``keys`` parser (``cli/main.py`` owns it)."""
    sub = parser.add_subparsers(dest="keys_command", required=True)
    create = sub.add_parser("create", help="create an API key and print it once")
    create.add_argument("--name", default="", help="a label for the key (shown by `keys list`)")
    sub.add_parser("list", help="list API keys (ids and names; never the keys)")


def run(args: argparse.Namespace, settings: WorkerSettings | None = None) -> int:
    """Execute the parsed ``keys`` command; returns the process exit code."""
    store = get_store(settings or WorkerSettings())
    try:
        if args.keys_command == "create":
            token, record = generate_key(args.name)
            store.create_api_key(record)
            print(f"id:             {record.id}")
            print(f"api key:        {token}")
            print(f"webhook secret: {record.webhook_secret}")
            print("Store both now: they are shown only once.", file=sys.stderr)
            return 0
        records = store.list_api_keys()
        if not records:
            print("no API keys (the server runs in dev mode on loopback)", file=sys.stderr)
        for r in records:
            state = "revoked" if r.revoked else "active"
            print(f"{r.id}\t{r.name or '-'}\t{r.created_at.isoformat(timespec='seconds')}\t{state}")
        return 0
    finally:
        store.close()


__all__ = ["add_arguments", "run"]
