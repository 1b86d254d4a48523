"""``patrol-office`` commands: serve, check-config, hash-password.

Exit codes: 0 success, 1 a runtime fault (store, port in use), 2 bad config or usage.
Expected faults print one line naming the problem, never a traceback.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from office import __version__
from office.config import ConfigError, OfficeConfig, load_config, parse_host_port

log = logging.getLogger("office")


def _overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    o: dict[str, dict[str, Any]] = {}
    if getattr(args, "broker", None):
        host, port = parse_host_port(args.broker, "broker")
        o["broker"] = {"host": host, "port": port}
    if getattr(args, "store", None):
        o["store"] = {"url": args.store}
    if getattr(args, "http", None):
        host, port = parse_host_port(args.http, "http")
        o["http"] = {"host": host, "port": port}
    return o


def cmd_serve(args: argparse.Namespace) -> int:
    from waitress import create_server

    from office.collector import Collector
    from office.store import StoreError, open_store
    from office.web import create_app

    cfg: OfficeConfig = load_config(args.config, _overrides(args))
    try:
        store = open_store(cfg.store.url, cfg.complaints.merge_m)
    except StoreError as e:
        print(f"patrol-office: store: {e}", file=sys.stderr)
        return 1
    log.info("office: store %s (%s, schema %d)", store.describe(), store.engine,
             store.schema_version())
    collector = Collector(cfg.broker, cfg.limits, store)
    app = create_app(cfg, store, collector)
    try:
        server = create_server(app, host=cfg.http.host, port=cfg.http.port, threads=8,
                               ident="patrol-office")
    except OSError as e:
        print(f"patrol-office: cannot serve on {cfg.http.host}:{cfg.http.port}: {e.strerror}",
              file=sys.stderr)
        return 1
    collector.start()

    def _stop(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    host = getattr(server, "effective_host", cfg.http.host)
    port = getattr(server, "effective_port", cfg.http.port)
    print(f"patrol-office: map at http://{host}:{port}/", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        log.info("office: stopping")
    finally:
        collector.stop()
        server.close()
        store.close()
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = load_config(args.file)
    from office.store import StoreError, open_store
    if args.store:
        try:  # opening it migrates it: only when asked
            store = open_store(cfg.store.url, cfg.complaints.merge_m)
            print(f"store {store.describe()}: {store.engine}, schema {store.schema_version()}",
                  file=sys.stderr)
        except StoreError as e:
            raise ConfigError(args.file, [f"store.url: {e}"]) from None
    print(json.dumps(cfg.masked(), indent=2, ensure_ascii=False))
    engine = cfg.store.url.split(":")[0]
    print(f"config {args.file} is valid: {len(cfg.users)} user(s), store {engine}, "
          f"broker {cfg.broker.host}:{cfg.broker.port}", file=sys.stderr)
    return 0


def cmd_hash_password(args: argparse.Namespace) -> int:
    from werkzeug.security import generate_password_hash
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if password != getpass.getpass("again: "):
            print("patrol-office: the two passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        print("patrol-office: a password needs at least 8 characters", file=sys.stderr)
        return 2
    print(generate_password_hash(password))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="patrol-office",
                                description="The office: collects the fleet's findings into "
                                "complaints and serves the map.")
    p.add_argument("--version", action="version", version=f"patrol-office {__version__}")
    p.add_argument("--log-level", default="INFO",
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the collector and the map page")
    s.add_argument("--config", help="office.toml (default: built-in defaults)")
    s.add_argument("--broker", help="HOST:PORT of the MQTT broker (over [broker])")
    s.add_argument("--store", help="store URL: sqlite:///FILE or postgresql://… (over [store])")
    s.add_argument("--http", help="HOST:PORT for the page (over [http])")
    s.set_defaults(func=cmd_serve)
    c = sub.add_parser("check-config", help="validate an office.toml and print it, secrets "
                       "masked")
    c.add_argument("file")
    c.add_argument("--store", action="store_true",
                   help="also open the store (creating and migrating it)")
    c.set_defaults(func=cmd_check_config)
    h = sub.add_parser("hash-password", help="read a password (prompt or stdin) and print the "
                       "password_hash for a [[users]] entry")
    h.set_defaults(func=cmd_hash_password)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(message)s",
                        datefmt="%Y-%m-%d %H:%M:%S")
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"patrol-office: config {e.source}:", file=sys.stderr)
        for p in e.problems:
            print(f"  {p}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
