"""Operator CLI: `recovery merchants ...`, `recovery keys ...`, `recovery psp ...`,
`recovery mail bounce`.

Prints tables for people and, with `--json`, one JSON document for scripts. An API key is
shown once, when it is created; only its hash is stored.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import re
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from recovery import devstack
from recovery.auth import ROLES, generate_key, register_key
from recovery.bounces import NotABounce, parse_bounce
from recovery.dbsetup import open_store
from recovery.mail import sender_address
from recovery.psp.credentials import PSPNotConfigured, credentials_to_store, parse_credentials
from recovery.psp.sealing import CredentialsCipher, CredentialsUnreadable
from recovery.settings import CredentialsSettings, DatabaseNotConfigured, DatabaseSettings
from recovery.store import Store, new_id

# sysexits.h: a mail server that pipes a bounce to us tries again later on this code
EX_TEMPFAIL = 75


def _print(data: Any, as_json: bool) -> None:
    if isinstance(data, list):
        data = [
            dataclasses.asdict(r) if dataclasses.is_dataclass(r) and not isinstance(r, type) else r
            for r in data
        ]
    if as_json:
        print(json.dumps(data, default=lambda v: v.isoformat() if isinstance(v, datetime) else v))
        return
    rows = data if isinstance(data, list) else [data]
    for row in rows:
        print("  ".join(f"{k}={'' if v is None else v}" for k, v in row.items()))


async def reseal(
    store: Store, cipher: CredentialsCipher, merchants: Sequence[str] | None = None
) -> dict[str, Any]:
    """Seal every merchant's credentials (or `merchants'`) with the current key, plaintext
    rows included."""
    done: dict[str, Any] = {"resealed": 0, "current": 0, "changed_meanwhile": 0, "failed": []}
    for stored in await store.all_psp_credentials():
        if merchants and stored.merchant_id not in merchants:
            continue
        if not cipher.needs_resealing(stored):
            done["current"] += 1
            continue
        try:
            sealed = cipher.seal(stored.merchant_id, stored.psp, cipher.open(stored))
        except CredentialsUnreadable as e:
            done["failed"].append(e.message)
            continue
        written = await store.set_psp_credentials(
            stored.merchant_id,
            stored.psp,
            sealed.key_id,
            sealed.blob,
            if_updated_at=stored.updated_at,
        )
        # a row written meanwhile was sealed with the current key by its writer
        done["resealed" if written else "changed_meanwhile"] += 1
    return done


async def _run(args: argparse.Namespace, store: Store, cipher: CredentialsCipher) -> int:
    if args.area == "merchants" and args.command == "create":
        merchant_id = args.id or new_id("mer")[:20]
        if not re.fullmatch(r"[A-Za-z0-9_]{3,64}", merchant_id):
            print("error: merchant id must be 3-64 letters, digits or _", file=sys.stderr)
            return 2
        await store.ensure_merchant(merchant_id, args.name)
        _print({"id": merchant_id, "name": args.name}, args.json)
    elif args.area == "merchants" and args.command == "list":
        _print(await store.list_merchants(), args.json)
    elif args.area == "merchants" and args.command == "set":
        if args.reply_to:
            try:
                sender_address(args.reply_to)
            except ValueError:
                print(f"error: not an e-mail address: {args.reply_to!r}", file=sys.stderr)
                return 2
        updated = await store.update_merchant(args.merchant, name=args.name, reply_to=args.reply_to)
        if updated is None:
            print(f"error: no merchant {args.merchant!r}", file=sys.stderr)
            return 1
        _print(dataclasses.asdict(updated), args.json)
    elif args.area == "keys" and args.command == "create":
        if args.merchant not in {m.id for m in await store.list_merchants()}:
            print(f"error: no merchant {args.merchant!r}", file=sys.stderr)
            return 1
        key = generate_key(args.mode)
        key_id = await register_key(store, args.merchant, args.role, key)
        _print(
            {"id": key_id, "merchant_id": args.merchant, "role": args.role, "key": key}, args.json
        )
    elif args.area == "keys" and args.command == "list":
        _print(await store.list_api_keys(args.merchant), args.json)
    elif args.area == "psp" and args.command == "set":
        raw = {
            k: v
            for k, v in {
                "api_key": args.api_key,
                "key_id": args.key_id,
                "key_secret": args.key_secret,
                "webhook_secret": args.webhook_secret,
                "api_base": args.api_base,
            }.items()
            if v
        }
        try:
            creds = parse_credentials(args.psp, raw)
        except PSPNotConfigured as e:
            print(f"error: {e.message}", file=sys.stderr)
            return 2
        try:
            sealed = cipher.seal(args.merchant, args.psp, credentials_to_store(creds))
        except CredentialsUnreadable as e:
            print(f"error: {e.message}", file=sys.stderr)
            return 2
        await store.set_psp_credentials(args.merchant, args.psp, sealed.key_id, sealed.blob)
        shown = {"merchant_id": args.merchant, "psp": args.psp, "set": sorted(raw)}
        _print(shown | {"key_id": sealed.key_id}, args.json)
    elif args.area == "psp" and args.command == "reseal":
        if cipher.current_key_id is None:
            print("error: CREDENTIALS_KEY is not set: it is the key to seal with", file=sys.stderr)
            return 2
        done = await reseal(store, cipher, args.merchant)
        _print(done | {"key_id": cipher.current_key_id}, args.json)
        if done["failed"]:
            for message in done["failed"]:
                print(f"error: {message}", file=sys.stderr)
            return 1
    elif args.area == "mail" and args.command == "bounce":
        try:
            bounce = parse_bounce(args.message)
        except NotABounce as e:  # read and let go: an MTA must not bounce it back to us
            _print({"ignored": str(e)}, args.json)
            return 0
        note = await store.record_bounce(bounce.message_id, bounce.reason)
        if note is None:
            _print({"ignored": f"no message of ours has Message-ID {bounce.message_id}"}, args.json)
            return 0
        _print(
            {
                "notification_id": note.id,
                "merchant_id": note.merchant_id,
                "payment_ref": note.payment_ref,
                "status": note.status,
                "error": note.error,
            },
            args.json,
        )
    elif args.area == "keys" and args.command == "revoke":
        if not await store.revoke_api_key(args.key_id):
            print(f"error: no active key {args.key_id!r}", file=sys.stderr)
            return 1
        _print({"id": args.key_id, "revoked": True}, args.json)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="recovery", description=__doc__)
    p.add_argument(
        "--database-url",
        help="default: $DATABASE_URL, else the database of the `make dev` stack running in "
        "this checkout (found through .data/dev-stack.json); there is no other default",
    )
    areas = p.add_subparsers(dest="area", required=True)

    merchants = areas.add_parser("merchants").add_subparsers(dest="command", required=True)
    create = merchants.add_parser("create", help="create a merchant")
    create.add_argument("name")
    create.add_argument("--id", help="merchant id (default: generated)")
    merchants.add_parser("list", help="list merchants")
    ms = merchants.add_parser("set", help="change a merchant's name or e-mail reply-to address")
    ms.add_argument("merchant")
    ms.add_argument("--name")
    ms.add_argument("--reply-to", help="where customers' replies to our e-mail go ('' clears it)")

    keys = areas.add_parser("keys").add_subparsers(dest="command", required=True)
    kc = keys.add_parser("create", help="create an API key (shown once)")
    kc.add_argument("--merchant", required=True)
    kc.add_argument("--role", choices=ROLES, default="merchant")
    kc.add_argument("--mode", choices=("test", "live"), default="live")
    kl = keys.add_parser("list", help="list a merchant's keys (never the keys themselves)")
    kl.add_argument("--merchant", required=True)
    kr = keys.add_parser("revoke", help="revoke a key by its id")
    kr.add_argument("key_id")
    psp = areas.add_parser("psp").add_subparsers(dest="command", required=True)
    ps = psp.add_parser("set", help="store a merchant's own PSP credentials (never printed)")
    ps.add_argument("--merchant", required=True)
    ps.add_argument("--psp", choices=("stripe", "razorpay"), required=True)
    ps.add_argument("--api-key", help="Stripe secret key")
    ps.add_argument("--key-id", help="Razorpay key id")
    ps.add_argument("--key-secret", help="Razorpay key secret")
    ps.add_argument("--webhook-secret")
    ps.add_argument("--api-base", help="for a local or test server")
    rs = psp.add_parser(
        "reseal",
        help="seal every merchant's PSP credentials with the current CREDENTIALS_KEY "
        "(after a rotation, and for rows stored before sealing)",
    )
    rs.add_argument("--merchant", action="append", help="only this merchant (repeatable)")
    mail = areas.add_parser("mail").add_subparsers(dest="command", required=True)
    mb = mail.add_parser(
        "bounce",
        help="record a bounce (a delivery status notification mailed back to MAIL_FROM): its "
        "message is failed with the reason and its address not mailed again for the merchant; "
        "pipe the bounce mailbox's messages here (exit 75, try again, if the database is down)",
    )
    mb.add_argument("file", nargs="?", default="-", type=_path_or_stdin, help="the message file")
    for sub in (create, merchants.choices["list"], ms, kc, kl, kr, ps, rs, mb):
        sub.add_argument("--json", action="store_true", help="print JSON")
    return p


def _path_or_stdin(value: str) -> Path | str:
    return value if value == "-" else Path(value)


def _credentials_keys(args: argparse.Namespace, database: DatabaseSettings) -> list[bytes]:
    """`CREDENTIALS_KEY` (and the old keys), else, on the dev stack's database, its key."""
    keys = CredentialsSettings()
    if keys.credentials_key or args.database_url or database.database_url:
        return keys.credentials_keys()
    data_dir = database.recovery_data_dir or devstack.find_data_dir(Path.cwd().resolve())
    key_file = data_dir / devstack.CREDENTIALS_KEY_FILE if data_dir else None
    if key_file is None or not key_file.is_file():
        return []
    dev_key = SecretStr(key_file.read_text().strip())
    return CredentialsSettings(credentials_key=dev_key).credentials_keys()


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.area == "mail":
        try:
            args.message = sys.stdin.buffer.read() if args.file == "-" else args.file.read_bytes()
        except OSError as e:
            print(f"error: cannot read {args.file}: {e}", file=sys.stderr)
            return 2
    database = DatabaseSettings()
    try:
        dsn = args.database_url or database.resolve_database_url()
        cipher = CredentialsCipher(_credentials_keys(args, database))
    except DatabaseNotConfigured as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"error: CREDENTIALS_KEY / CREDENTIALS_KEYS_OLD: {e}", file=sys.stderr)
        return 2

    async def go() -> int:
        try:
            store = await open_store(dsn)
        except (OSError, ConnectionError) as e:
            print(f"error: cannot reach the database: {e}", file=sys.stderr)
            return EX_TEMPFAIL if args.area == "mail" else 1
        try:
            return await _run(args, store, cipher)
        finally:
            await store.close()

    return asyncio.run(go())


if __name__ == "__main__":
    sys.exit(main())
