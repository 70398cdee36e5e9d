"""Benchmark: 200 servers polled over SSH on loopback with kept connections; cost of a reconnect.

    python bench/bench_ssh.py [--servers 200] [--rounds 5] [--concurrency 64] [--sshd]

By default the servers are 200 asyncssh servers (`agent.demo.ssh_server.SimulatedLinux`, each
with its own host key, verified against a known_hosts file) in one child process, so the CPU
figure is the poller's alone and measures the collector, not the remote commands. With
`--sshd` every target polls one real OpenSSH sshd (one connection each), which runs the real
commands; the poller's CPU is still measured alone, but wall time then includes ~12 processes
forked on this machine per poll.

Figures: polls/s and CPU ms per poll with connection reuse; then every connection is dropped
and one round is polled again: the extra wall and CPU per poll is the reconnect cost (TCP,
key exchange, host key check, public key login).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncssh

from dutyd.agent.scheduler import Scheduler
from dutyd.collectors.base import CollectorContext
from dutyd.collectors.ssh import SshCollector, SshTarget


def serve(count: int, directory: Path) -> None:
    """Child process: `count` simulated servers; prints their ports as JSON, then runs until
    its stdin closes (the parent exiting, however it exits, ends the child too)."""
    from dutyd.agent.demo.ssh_server import SimulatedLinux, demo_state

    async def main() -> None:
        client_key = asyncssh.generate_private_key("ssh-ed25519")
        servers = []
        for _ in range(count):
            now = time.time()
            server = SimulatedLinux(demo_state(now))
            server.state.files["/srv/backup/db"] = {
                f"db-{day}.sql.gz": (now - day * 86400.0, 734_003_200) for day in range(16)
            }
            server.client_key = client_key
            await server.start()
            servers.append(server)
        key_path, _ = servers[0].write_files(directory)
        lines = []
        for s in servers:
            public = s.host_key.export_public_key().decode().strip()
            lines.append(f"[127.0.0.1]:{s.port} {public}\n")
        (directory / "known_hosts").write_text("".join(lines))
        print(json.dumps({"ports": [s.port for s in servers], "key": str(key_path)}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        for s in servers:
            await s.stop()

    asyncio.run(main())


def targets_for_sim(info: dict[str, Any], directory: Path) -> list[dict[str, Any]]:
    return [
        {
            "port": port,
            "username": "dutyd",
            "client_keys": [info["key"]],
            "known_hosts": str(directory / "known_hosts"),
            "services": ["nginx.service", "postgresql.service"],
            "backups": [{"name": "db", "path": "/srv/backup/db", "pattern": "db-*.sql.gz"}],
            "commands": [{"name": "queues", "argv": ["/usr/local/bin/queue-depth"]}],
        }
        for port in info["ports"]
    ]


async def run(args: argparse.Namespace, targets: list[dict[str, Any]]) -> dict[str, Any]:
    ctx = CollectorContext()
    collectors = [
        SshCollector(
            SshTarget.model_validate(
                {
                    "name": f"srv{i}",
                    "kind": "ssh",
                    "address": "127.0.0.1",
                    "timeout": 30,
                    "connect_timeout": 20,
                    **t,
                }
            ),
            ctx,
        )
        for i, t in enumerate(targets)
    ]
    scheduler = Scheduler(lambda _r: None)
    slots = asyncio.Semaphore(args.concurrency)
    failures: dict[str, int] = {}

    async def one(c: SshCollector) -> None:
        async with slots:
            result = await scheduler.poll_once(c)
        if not result.ok:
            failures[result.message[:120]] = failures.get(result.message[:120], 0) + 1

    async def measure(rounds: int) -> tuple[float, float]:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(rounds):
            await asyncio.gather(*(one(c) for c in collectors))
        return time.process_time() - cpu0, time.perf_counter() - wall0

    try:
        first_cpu, first_wall = await measure(1)  # connects every server
        failures_first = dict(failures)
        failures.clear()
        cpu, wall = await measure(args.rounds)
        for c in collectors:
            c.session.drop()  # as if every connection had died: the next poll reconnects
        re_cpu, re_wall = await measure(1)
        connects = sum(c.connects for c in collectors)
    finally:
        for c in collectors:
            await c.close()
        await ctx.close()
    n = len(collectors)
    polls = args.rounds * n
    return {
        "servers": n,
        "polls": polls,
        "polls_per_s": polls / wall,
        "cpu_ms_per_poll": cpu * 1000 / polls,
        "first_round_s": first_wall,
        "first_cpu_ms_per_poll": first_cpu * 1000 / n,
        "reconnect_round_s": re_wall,
        "reconnect_cpu_ms_per_poll": re_cpu * 1000 / n,
        "reconnect_extra_cpu_ms": re_cpu * 1000 / n - cpu * 1000 / polls,
        "connects": connects,
        "failures": failures_first | failures,
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--sshd", action="store_true", help="poll one real OpenSSH sshd")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.servers, Path(args.serve))
        return 0

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    with tempfile.TemporaryDirectory(prefix="dutyd-bench-ssh-") as tmp:
        directory = Path(tmp)
        if args.sshd:
            from tests.ssh_fixtures import SshdServer

            sshd = SshdServer(directory)
            sshd.start()
            sshd.write_known_hosts()
            backups = directory / "backup"
            backups.mkdir()
            (backups / "db-1.sql.gz").write_bytes(b"x" * 1000)
            target = {
                "port": sshd.port,
                "username": sshd.user,
                "client_keys": [str(sshd.client_key_path)],
                "known_hosts": str(sshd.known_hosts_path),
                "backups": [{"name": "db", "path": str(backups), "pattern": "db-*.sql.gz"}],
                "commands": [{"name": "one", "argv": ["echo", "1"]}],
            }
            where = f"one OpenSSH sshd (pid {sshd.proc.pid if sshd.proc else '?'})"
            try:
                result = asyncio.run(run(args, [target] * args.servers))
            finally:
                sshd.kill_all()
        else:
            child = subprocess.Popen(
                [sys.executable, __file__, "--serve", tmp, "--servers", str(args.servers)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                assert child.stdout is not None
                info = json.loads(child.stdout.readline())
                where = f"{args.servers} asyncssh servers in child pid {child.pid}"
                result = asyncio.run(run(args, targets_for_sim(info, directory)))
            finally:
                if child.stdin:
                    child.stdin.close()
                try:
                    child.wait(10)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait(5)

    r = result
    print(
        f"SSH on loopback: {r['servers']} targets x {args.rounds} rounds, {args.concurrency} "
        f"in flight, {where}; {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"asyncssh {asyncssh.__version__}"
    )
    print(
        f"kept connections:  {r['polls_per_s']:.0f} polls/s, "
        f"{r['cpu_ms_per_poll']:.2f} CPU ms per poll ({r['polls']} polls)"
    )
    print(
        f"first connect:     {r['first_round_s']:.2f} s for the round, "
        f"{r['first_cpu_ms_per_poll']:.2f} CPU ms per poll (connect + login + poll)"
    )
    print(
        f"reconnect round:   {r['reconnect_round_s']:.2f} s, "
        f"{r['reconnect_cpu_ms_per_poll']:.2f} CPU ms per poll, i.e. a reconnect costs "
        f"{r['reconnect_extra_cpu_ms']:.2f} CPU ms more than a poll on a kept connection"
    )
    print(
        f"connections opened: {r['connects']} (expected {2 * r['servers']}); "
        f"peak RSS {r['rss_mib']:.1f} MiB; failures: {r['failures'] or 'none'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
