#!/usr/bin/env python3
"""Throughput, CPU, latency and memory of entropy-sentinel next to a byte pipe, in one run (issue 12).

Starts, in this run: the scripted vLLM-shaped upstream (bench/replay_upstream.py: 256 tokens with
top-20 logprobs per streamed event, or one 256-token top-20 body), the byte pipe (bench/bytepipe.py,
the limit for an aiohttp proxy) and ``entropy-sentinel serve`` with its shipped defaults (request
log, SQLite store in a temporary directory, built-in estimator). Proxies run pinned to core 1
(``taskset -c 1``); the upstream and this load generator share core 0. The client asks for no
logprobs, so the proxy strips them. Then, in rounds that interleave the targets (direct to the
upstream, byte pipe, each entropy-sentinel):

0. once, on the fresh processes: proxy RSS per open stream (64 slow streams open at once);
1. paced streams: 64 streams arriving over one second on open connections, tokens 20 ms apart
   (3.2k tokens/s offered): time to first token, per-token latency (upstream send to client
   receipt, from the send time the upstream stamps into each event's id), time from the last token
   to ``[DONE]`` (the score's delay);
2. saturated streams at concurrency 1 / 16 / 64 (/ 256 with --c256): tokens/s to the clients and
   proxy CPU per token (utime + stime from /proc/<pid>/stat over the window, all threads);
3. non-streaming at concurrency 16: requests/s and proxy CPU per request.

Prints each figure as the median over the rounds, ratios against the byte pipe taken within each
round. Asserts nothing. ``--profile S`` samples the (first) entropy-sentinel with py-spy for S
seconds under saturated load and prints its top functions. ``--sentinel NAME=DIR`` (repeatable)
runs entropy-sentinel from the source tree DIR instead of this checkout's: a before/after in one
run, e.g. ``git archive <old> proxy | tar -x -C /tmp/before`` and ``--sentinel before=/tmp/before/proxy
--sentinel after=proxy``.

    .venv/bin/python bench/throughput.py              # ~3 minutes
    .venv/bin/python bench/throughput.py --quick      # smoke run, ~40 s
    .venv/bin/python bench/throughput.py --profile 15 --json /tmp/figures.json
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
ID_PREFIX = b'"id":"chatcmpl-'
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
CLIENT_BODY = {
    "model": "gemma-3-270m",
    "messages": [{"role": "user", "content": "Question: What is 17 + 25?\nAnswer:"}],
    "max_tokens": 256,
    "temperature": 0,
}


# ----------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def taskset(core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if shutil.which("taskset") else []


@dataclass
class Target:
    name: str
    url: str  # base URL, no /v1
    proc: subprocess.Popen | None = None  # the process whose CPU and memory are measured
    proxy: bool = True

    def cpu_s(self) -> float:
        if self.proc is None:
            return float("nan")
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (all threads)

    def rss(self) -> int:
        if self.proc is None:
            return 0
        return int(Path(f"/proc/{self.proc.pid}/statm").read_text().split()[1]) * PAGE


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as resp:
            if resp.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout} s")


def start(cmd: list[str], ready: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        wait_ready(ready, proc)
    except RuntimeError:
        sys.stderr.write(log.read_text()[-3000:])
        raise
    return proc


# ----------------------------------------------------------------------------- load


@dataclass
class Stats:
    tokens: int = 0
    requests: int = 0
    errors: int = 0
    ttft: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)  # per token, upstream send -> client receipt
    done_delay: list[float] = field(default_factory=list)  # last token -> [DONE]


async def stream_once(session: aiohttp.ClientSession, url: str, stats: Stats, gap_ms: float = 0.0) -> None:
    body = orjson.dumps({**CLIENT_BODY, "stream": True})
    stamps = gap_ms > 0
    t0 = time.perf_counter()
    headers = {"Content-Type": "application/json", "X-Bench-Gap-Ms": str(gap_ms)}
    async with session.post(url + "/v1/chat/completions", data=body, headers=headers) as resp:
        if resp.status != 200:
            await resp.read()
            stats.errors += 1
            return
        buf, first, last, done = b"", None, None, None
        async for chunk in resp.content.iter_any():
            now = time.perf_counter()
            now_ns = time.monotonic_ns()
            *events, buf = (buf + chunk).split(b"\n\n")
            for event in events:
                if event.startswith(b"data: {"):
                    stats.tokens += 1
                    first = first or now
                    last = now
                    if stamps:
                        at = event.find(ID_PREFIX) + len(ID_PREFIX)
                        stats.latency.append((now_ns - int(event[at : at + 20])) / 1e9)
                elif event.startswith(b"data: [DONE]"):
                    done = now
    if first is None or done is None or last is None:
        stats.errors += 1
        return
    stats.requests += 1
    stats.ttft.append(first - t0)
    stats.done_delay.append(done - last)


async def unary_once(session: aiohttp.ClientSession, url: str, stats: Stats) -> None:
    async with session.post(url + "/v1/chat/completions", data=orjson.dumps(CLIENT_BODY),
                            headers={"Content-Type": "application/json"}) as resp:
        body = await resp.read()
    if resp.status != 200 or not body.startswith(b"{"):
        stats.errors += 1
        return
    stats.requests += 1


def connector() -> aiohttp.TCPConnector:
    return aiohttp.TCPConnector(limit=0, force_close=False)


async def saturate(target: Target, c: int, seconds: float, warmup: float, unary: bool = False) -> dict[str, float]:
    """``c`` clients back to back for ``warmup`` + ``seconds``; figures over the last ``seconds``."""
    stats = Stats()
    stop = False
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector(), timeout=timeout) as session:

        async def client() -> None:
            while not stop:
                try:
                    await (unary_once(session, target.url, stats) if unary else stream_once(session, target.url, stats))
                except (aiohttp.ClientError, TimeoutError):
                    stats.errors += 1

        tasks = [asyncio.create_task(client()) for _ in range(c)]
        await asyncio.sleep(warmup)
        tok0, req0, cpu0, t0 = stats.tokens, stats.requests, target.cpu_s(), time.perf_counter()
        await asyncio.sleep(seconds)
        tok1, req1, cpu1, t1 = stats.tokens, stats.requests, target.cpu_s(), time.perf_counter()
        stop = True
        await asyncio.gather(*tasks)
    wall, cpu = t1 - t0, cpu1 - cpu0
    out = {"wall_s": wall, "cpu_s": cpu, "errors": stats.errors}
    if unary:
        reqs = req1 - req0
        out.update(req_per_s=reqs / wall, cpu_ms_per_req=1e3 * cpu / reqs if reqs else float("nan"))
    else:
        toks = tok1 - tok0
        out.update(tokens_per_s=toks / wall, cpu_us_per_token=1e6 * cpu / toks if toks else float("nan"))
    return out


async def paced(target: Target, streams: int, gap_ms: float) -> dict[str, float]:
    """``streams`` streams arriving over one second, tokens ``gap_ms`` apart: latencies."""
    stats = Stats()
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector(), timeout=timeout) as session:
        # connections open first (client -> proxy -> upstream): TTFT is not connection set-up
        async def touch() -> None:
            async with session.get(target.url + "/v1/models") as resp:
                await resp.read()

        await asyncio.gather(*(touch() for _ in range(streams)))
        spread = 1.0 / streams  # arrivals spread over one second, as independent clients arrive

        async def one(i: int) -> None:
            await asyncio.sleep(i * spread)
            await stream_once(session, target.url, stats, gap_ms)

        t0 = time.perf_counter()
        tasks = [asyncio.create_task(one(i)) for i in range(streams)]
        await asyncio.gather(*tasks, return_exceptions=True)
        wall = time.perf_counter() - t0
    out = {
        "errors": stats.errors,
        "tokens_per_s": stats.tokens / wall,
        "offered_tokens_per_s": streams * 1000 / gap_ms,
    }
    for name, values in (("ttft", stats.ttft), ("latency", stats.latency), ("done_delay", stats.done_delay)):
        if values:
            out[f"{name}_p50_ms"] = 1e3 * float(np.percentile(values, 50))
            out[f"{name}_p99_ms"] = 1e3 * float(np.percentile(values, 99))
    return out


async def memory(target: Target, streams: int) -> float:
    """Proxy RSS per open stream (KiB): ``streams`` slow streams opened on a fresh proxy, sampled
    once each has had ~10 tokens, then dropped."""
    stats = Stats()
    idle = target.rss()
    async with aiohttp.ClientSession(connector=connector()) as session:
        tasks = [asyncio.create_task(stream_once(session, target.url, stats, 50.0)) for _ in range(streams)]
        await asyncio.sleep(0.6)
        rss = target.rss()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return (rss - idle) / 1024 / streams


async def warm(target: Target) -> None:
    stats = Stats()
    async with aiohttp.ClientSession(connector=connector()) as session:
        for _ in range(3):
            await stream_once(session, target.url, stats)
            await unary_once(session, target.url, stats)


# ----------------------------------------------------------------------------- profile


PROFILE_LOADS = ("mixed", "stream1", "stream64", "unary16", "paced64")


def profile(target: Target, seconds: float, out: Path, top: int = 25, load_kind: str = "mixed",
            gil: bool = True) -> None:
    """py-spy over every thread of ``target`` under ``load_kind``: saturated streaming (c = 64) with
    non-streaming load beside it (``mixed``), or one of them alone (``stream64``, ``unary16``), or a
    single stream back to back (``stream1``: the fixed cost per request shows), or the 64 paced streams
    of the latency table, one wave after another (``paced64``: what holds the loop up between tokens)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists() or target.proc is None:
        print("profile: py-spy not found (.venv/bin/pip install py-spy)")
        return
    cmd = [spy, "record", "--pid", str(target.proc.pid), "--duration", str(int(seconds)), "--rate", "250",
           "--format", "raw", "--nolineno", *(["--gil"] if gil else []), "--output", str(out)]
    spy_proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def waves(window: float) -> None:
        end = time.perf_counter() + window
        while time.perf_counter() < end:
            await paced(target, 64, 20.0)

    async def load() -> None:
        window = seconds * 0.8
        loads = {
            "mixed": lambda: [saturate(target, 64, window, 0.5), saturate(target, 4, window, 0.5, unary=True)],
            "stream1": lambda: [saturate(target, 1, window, 0.5)],
            "stream64": lambda: [saturate(target, 64, window, 0.5)],
            "unary16": lambda: [saturate(target, 16, window, 0.5, unary=True)],
            "paced64": lambda: [waves(window)],
        }
        await asyncio.gather(*loads[load_kind]())

    asyncio.run(load())
    spy_proc.wait()
    if not out.exists():
        print("profile: py-spy wrote nothing (ptrace not permitted?)")
        return
    self_n: collections.Counter[str] = collections.Counter()
    total_n: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        samples += n
        if frames:
            self_n[frames[-1]] += n
        for frame in set(frames):
            total_n[frame] += n
    print(f"\nprofile of {target.name} ({load_kind}): {samples} samples over {seconds:.0f} s of "
          + ("the thread holding the GIL (py-spy --gil" if gil else "every thread on CPU (py-spy") + f"; raw: {out})")
    print(f"{'self %':>7} {'total %':>8}  function (file)")
    for frame, n in self_n.most_common(top):
        print(f"{100 * n / samples:7.1f} {100 * total_n[frame] / samples:8.1f}  {frame}")
    print(f"\n{'total %':>8}  function (file), inclusive, {top} largest")
    for frame, n in total_n.most_common(top):
        print(f"{100 * n / samples:8.1f}  {frame}")


# ----------------------------------------------------------------------------- table


def median(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def fmt_k(x: float) -> str:
    return f"{x / 1000:.1f}k" if x >= 1000 else f"{x:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: one round, short windows")
    parser.add_argument("--rounds", type=int, default=3, help="0: no measurements (with --profile)")
    parser.add_argument("--seconds", type=float, default=2.0, help="measured window per saturated run")
    parser.add_argument("--c256", action="store_true", help="also 256 concurrent streams")
    parser.add_argument("--gap-ms", type=float, default=20.0, help="token spacing of the paced streams")
    parser.add_argument("--sentinel", action="append", default=[], metavar="NAME=DIR",
                        help="an entropy-sentinel run from source tree DIR (a proxy/ folder); repeatable; "
                             "default: this checkout's, named entropy-sentinel")
    parser.add_argument("--no-direct", action="store_true", help="skip the direct-to-upstream target")
    parser.add_argument("--serve-args", default="", help="extra `serve` arguments for every entropy-sentinel, "
                        "e.g. '--estimator none' (the figures are then not the shipped defaults')")
    parser.add_argument("--profile", type=float, default=0.0, metavar="S", help="py-spy the proxy for S s")
    parser.add_argument("--profile-out", type=Path, default=None)
    parser.add_argument("--profile-threads", action="store_true",
                        help="sample every thread on CPU (default: the thread holding the GIL)")
    parser.add_argument("--profile-load", choices=PROFILE_LOADS, default="mixed", help="the load while profiling")
    parser.add_argument("--json", type=Path, default=None, help="write every figure of every round here")
    args = parser.parse_args()
    rounds = min(1, args.rounds) if args.quick else args.rounds
    seconds = 1.0 if args.quick else args.seconds
    warmup = 0.3
    concurrencies = [1, 16, 64] + ([256] if args.c256 else [])
    tokens = 256

    os.sched_setaffinity(0, {0})  # the load generator shares core 0 with the upstream
    tmp = Path(tempfile.mkdtemp(prefix="sentinel-bench-"))
    procs: list[subprocess.Popen] = []
    py = sys.executable
    try:
        up_port = free_port()
        upstream_url = f"http://127.0.0.1:{up_port}"
        procs.append(start([*taskset(0), py, str(BENCH / "replay_upstream.py"), "--port", str(up_port),
                            "--tokens", str(tokens)], upstream_url + "/v1/models", tmp / "upstream.log"))
        targets: list[Target] = []
        if not args.no_direct:
            targets.append(Target("direct", upstream_url, proxy=False))
        pipe_port = free_port()
        pipe = start([*taskset(1), py, str(BENCH / "bytepipe.py"), "--port", str(pipe_port), "--upstream",
                      upstream_url], f"http://127.0.0.1:{pipe_port}/v1/models", tmp / "bytepipe.log")
        procs.append(pipe)
        targets.append(Target("byte pipe", f"http://127.0.0.1:{pipe_port}", pipe))
        sentinels = [tuple(s.split("=", 1)) for s in args.sentinel] or [("entropy-sentinel", str(ROOT / "proxy"))]
        for name, src in sentinels:
            port = free_port()
            env = {**os.environ, "PYTHONPATH": src}
            cmd = [*taskset(1), py, "-m", "entropy_sentinel", "serve", "--upstream", upstream_url, "--port", str(port),
                   "--store", str(tmp / f"{name}.db"), *args.serve_args.split()]
            proc = start(cmd, f"http://127.0.0.1:{port}/sentinel/healthz", tmp / f"{name}.log", env)
            procs.append(proc)
            targets.append(Target(name, f"http://127.0.0.1:{port}", proc))
        rss_per_stream = {t.name: asyncio.run(memory(t, max(concurrencies))) for t in targets if t.proxy}
        for t in targets:
            asyncio.run(warm(t))

        results: dict[str, dict[str, list[dict[str, float]]]] = {t.name: collections.defaultdict(list) for t in targets}
        started = time.perf_counter()
        for r in range(rounds):
            for t in targets:
                if t.proxy:
                    results[t.name]["paced"].append(asyncio.run(paced(t, 64, args.gap_ms)))
            for c in concurrencies:
                for t in targets:
                    results[t.name][f"stream_c{c}"].append(asyncio.run(saturate(t, c, seconds, warmup)))
            for t in targets:
                results[t.name]["unary_c16"].append(asyncio.run(saturate(t, 16, seconds, warmup, unary=True)))
            print(f"round {r + 1}/{rounds} done ({time.perf_counter() - started:.0f} s)", file=sys.stderr)

        if rounds:
            report(results, targets, concurrencies, rounds, args.gap_ms)
        print(f"\nproxy RSS per open stream, {max(concurrencies)} streams on the fresh process: "
              + ", ".join(f"{n} {v:.0f} KiB" for n, v in rss_per_stream.items()))
        if args.json:
            dump = {"rounds": results, "rss_kib_per_stream": rss_per_stream}
            args.json.write_text(orjson.dumps(dump, option=orjson.OPT_INDENT_2).decode())
        if args.profile:
            prof = next(t for t in targets if t.name not in ("direct", "byte pipe"))
            profile(prof, args.profile, args.profile_out or tmp / "pyspy.raw", load_kind=args.profile_load,
                    gil=not args.profile_threads)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)


def report(results: dict, targets: list[Target], concurrencies: list[int], rounds: int, gap_ms: float) -> None:
    names = [t.name for t in targets]
    width = max(len(n) for n in names) + 2

    def per_round(name: str, key: str, metric: str) -> list[float]:
        return [run.get(metric, float("nan")) for run in results[name][key]]

    def ratio(name: str, key: str, metric: str) -> float:
        return median([a / b for a, b in zip(per_round(name, key, metric), per_round("byte pipe", key, metric),
                                             strict=True)])

    def delta(name: str, key: str, metric: str) -> float:
        return median([a - b for a, b in zip(per_round(name, key, metric), per_round("byte pipe", key, metric),
                                             strict=True)])

    print(f"\nmedians of {rounds} round(s); ratios and deltas against the byte pipe within each round")
    print("\nstreaming tokens/s to clients (256 tokens, top-20 upstream, none to the client)")
    print(f"{'':{width}}" + "".join(f"{'c = ' + str(c):>18}" for c in concurrencies))
    for n in names:
        cells = []
        for c in concurrencies:
            v = median(per_round(n, f"stream_c{c}", "tokens_per_s"))
            cells.append(f"{fmt_k(v)} ({ratio(n, f'stream_c{c}', 'tokens_per_s'):.2f}x)")
        print(f"{n:{width}}" + "".join(f"{c:>18}" for c in cells))
    print("\nproxy CPU per streamed token, µs (all threads)")
    for n in names[1:] if names[0] == "direct" else names:
        cells = [f"{median(per_round(n, f'stream_c{c}', 'cpu_us_per_token')):.1f}" for c in concurrencies]
        print(f"{n:{width}}" + "".join(f"{c:>18}" for c in cells))
    print("\nnon-streaming, c = 16 (256-token top-20 bodies)")
    print(f"{'':{width}}{'req/s':>10}{'ratio':>8}{'CPU ms/req':>12}")
    for n in names:
        rps = median(per_round(n, "unary_c16", "req_per_s"))
        cpu = median(per_round(n, "unary_c16", "cpu_ms_per_req"))
        print(f"{n:{width}}{rps:10.0f}{ratio(n, 'unary_c16', 'req_per_s'):7.2f}x{cpu:12.2f}")
    print(f"\n64 paced streams, tokens {gap_ms:g} ms apart ({64 * 1000 / gap_ms:.0f} tokens/s offered); ms")
    cols = ["ttft_p50_ms", "ttft_p99_ms", "latency_p50_ms", "latency_p99_ms", "done_delay_p50_ms",
            "done_delay_p99_ms"]
    heads = ["TTFT p50", "p99", "token p50", "p99", "[DONE] p50", "p99", "tokens/s"]
    print(f"{'':{width}}" + "".join(f"{h:>11}" for h in heads))
    for n in names:
        if "paced" not in results[n]:
            continue
        cells = [f"{median(per_round(n, 'paced', m)):.2f}" for m in cols]
        cells.append(fmt_k(median(per_round(n, "paced", "tokens_per_s"))))
        print(f"{n:{width}}" + "".join(f"{c:>11}" for c in cells))
        if n != "byte pipe":
            added = [f"{delta(n, 'paced', m):+.2f}" for m in cols]
            print(f"{'  added':{width}}" + "".join(f"{c:>11}" for c in added))
    errors = {n: sum(run.get("errors", 0) for runs in results[n].values() for run in runs) for n in names}
    if any(errors.values()):
        print(f"\nerrors (failed or cut requests): {errors}")


if __name__ == "__main__":
    main()
