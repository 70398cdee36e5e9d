"""A simulated machine room on loopback, and the configs that watch it.

    python -m bench.fleet write --devices 1000 --dir /tmp/room [--spec spec.json]
        writes dir/dutyd.yaml, dir/prometheus/*.yml (typical and tuned stacks), dir/sd/*.json,
        dir/ssh/ (keys, known_hosts) and dir/fleet.json (the spec, faults included)
    python -m bench.fleet serve --dir /tmp/room [--shard K] [--duration S]
        serves shard K of the room (all shards when --shard is omitted, one process each)
    curl -d '{"device":"ups-0003","mode":"break"}' 127.0.0.1:18600/fault   (shard 0's devices)

The spec is described in bench/fleet/spec.py; the configs in bench/fleet/configs.py.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from bench.fleet.configs import write_all
from bench.fleet.room import serve
from bench.fleet.spec import FleetSpec, SpecError

ROOT = Path(__file__).resolve().parent.parent.parent
SERVE = [sys.executable, "-m", "bench.fleet", "serve"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="write the spec and every config of the room")
    w.add_argument("--dir", type=Path, required=True)
    w.add_argument("--spec", type=Path, help="a fleet spec (JSON); flags below override it")
    w.add_argument("--devices", type=int)
    w.add_argument("--interval", type=float)
    w.add_argument("--shards", type=int)
    w.add_argument("--dutyd-port", type=int, default=18646)
    w.add_argument("--receiver", default="http://127.0.0.1:18700", help="webhook receiver base")
    s = sub.add_parser("serve", help="serve the room written by `write`")
    s.add_argument("--dir", type=Path, required=True)
    s.add_argument("--shard", type=int, help="only this shard (default: all, one process each)")
    s.add_argument("--duration", type=float, help="stop after this many seconds")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    try:
        if args.command == "write":
            spec = FleetSpec.load(args.spec) if args.spec else FleetSpec()
            for key in ("devices", "interval", "shards"):
                if getattr(args, key) is not None:
                    setattr(spec, key, getattr(args, key))
            spec = FleetSpec.from_dict(spec.to_dict())  # validate the overrides too
            written = write_all(
                spec, args.dir, dutyd_port=args.dutyd_port, receiver=args.receiver.rstrip("/")
            )
            for what, path in written.items():
                print(f"{what:<24} {path}")
            print(f"devices: {spec.counts()}")
            return 0
        spec = FleetSpec.load(args.dir / "fleet.json")
    except SpecError as exc:
        print(f"fleet spec: {exc}", file=sys.stderr)
        return 2
    if args.shard is not None:
        if not 0 <= args.shard < spec.shards:
            print(f"--shard: 0..{spec.shards - 1}", file=sys.stderr)
            return 2
        asyncio.run(serve(spec, args.dir, args.shard, args.duration))
        return 0
    # All shards, one child process each; stopped together.
    extra = ["--duration", str(args.duration)] if args.duration else []
    children = [
        subprocess.Popen(
            [*SERVE, "--dir", str(args.dir), "--shard", str(k), *extra],
            cwd=ROOT,
        )
        for k in range(spec.shards)
    ]
    try:
        for c in children:
            c.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for c in children:
            if c.poll() is None:
                os.kill(c.pid, signal.SIGTERM)
        for c in children:
            c.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
