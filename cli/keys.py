"""``vigil keys``: create (printed once), list and revoke API keys, straight in Redis.

Uses ``VIGIL_REDIS_URL``, or the embedded Redis of ``VIGIL_DATA_DIR`` (joining the server that
a running ``vigil serve`` started on the same files).
"""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)

ROLES = ("viewer", "ingest", "admin")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``keys`` subcommand and its actions."""
    parser = subparsers.add_parser("keys", help="create, list or revoke API keys")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create a key and print it (shown only once)")
    create.add_argument("--role", choices=ROLES, required=True)
    create.add_argument("--name", required=True, help="who or what uses the key")
    actions.add_parser("list", help="list keys (never the keys themselves)")
    revoke = actions.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Do the chosen action; returns 1 when a key to revoke is unknown."""
    from cli.serve import open_redis
    from service.config import get_settings
    from service.schemas import Role
    from service.store import Store

    with open_redis(get_settings()) as settings:
        assert settings.redis_url
        store = Store.from_url(settings.redis_url, settings.redis_prefix)
        try:
            if args.action == "create":
                record, plaintext = store.api_keys.create(args.name, Role(args.role))
                print(f"key_id: {record.key_id}\nrole:   {record.role.value}\nkey:    {plaintext}")
                print("(the key is shown only this once)")
                return 0
            if args.action == "list":
                print(f"{'key_id':14} {'role':7} {'created':25} {'revoked':25} name")
                for key in store.api_keys.list():
                    revoked = (
                        key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else "-"
                    )
                    created = key.created_at.isoformat(timespec="seconds")
                    print(
                        f"{key.key_id:14} {key.role.value:7} {created:25} {revoked:25} {key.name}"
                    )
                return 0
            revoked_key = store.api_keys.revoke(args.key_id)
            if revoked_key is None:
                print(f"no key with id {args.key_id}")
                return 1
            print(f"revoked {revoked_key.key_id} ({revoked_key.name})")
            return 0
        finally:
            store.close()
