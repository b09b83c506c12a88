"""A bounded load test of `tnlm serve` from a separate process on loopback: TransNormer (tnl-tiny)
against the KV-cache Transformer of the same shape (transformer-tiny), side by side in one run.

Each scenario starts a fresh server (`tnlm serve MODEL --port 0 --threads 1`), warms it up with one
small request, and drives it with the official openai client (AsyncOpenAI, streaming, temperature 0);
errors are counted, never retried. TTFT is measured by the client: until the chunk of the first
generated token arrives (the server sends it even when the token's text is held back, e.g. half a
character, which random-weight models produce often).

1. throughput: a fixed number of requests (--requests, prompt ~--prompt-tokens, --max-tokens each)
   from 1 and from --clients concurrent clients, stopping early at --time-limit seconds: requests/s,
   generated tokens/s, time to first token (TTFT) and latency percentiles, server peak memory.
2. conversation: --turns chat turns (each a ~--turn-tokens user message and a --reply-tokens reply),
   --repeats conversations one after another, with the server's state reuse on and off: TTFT of
   every turn (median over the repeats) and the prompt tokens the server reports as cached. TTFT here
   is from the request leaving the client to the first token's chunk, measured with a raw httpx
   streaming client whose JSON body is serialised before the clock starts: the openai client's own
   time before it sends grows with the conversation (it transforms every message of its typed
   request: ~1.5 ms at turn 1, ~16 ms at turn 20 on a mock transport with no server at all), which is
   the client's cost, not the server's. The same number of conversations is also run through the
   openai client (other texts of the same sizes, so that no turn reuses the other client's states);
   its TTFT is printed under the row ("openai client") and kept in the JSON, not hidden. With
   reuse on, every turn should process the same number of new tokens, so that its first and last
   turns compare like with like: the user message and the chat markers around it (a later turn also
   feeds the previous reply's last token and end marker: 3 tokens more). No system prompt unless
   --system-prompt gives one (it makes turn 1 longer: the issue's first table had 257 new tokens at
   turn 1 and 222 later); the table shows the new tokens of the first and the last turn. Under each
   row, the server's own TTFT of each turn (from the request's arrival to its first token sampled,
   read from its Prometheus histogram): the gap to the raw client's TTFT is HTTP and transport time.
   Each conversation's connection is opened (GET /health) before its first turn, so that turn 1 does
   not pay a TCP connect the later turns do not.
3. memory: --open-tnl TransNormer conversations and --open-tfm Transformer conversations of
   --conv-tokens tokens each, kept open by the server: its resident and peak memory (VmRSS/VmHWM of
   the server process) and the bytes its state cache reports.

    python benchmarks/serve_load.py            # the issue's sizes: several minutes on 2 cores
    python benchmarks/serve_load.py --quick    # a small run to check that everything works

Targets (issue 15): tokens/s with 8 clients >= 3x one client at a time; TransNormer's last turn's
TTFT <= 1.2x its first turn's while the Transformer's grows; 64 open TransNormer conversations of 4K
tokens take less server memory than 4 Transformer ones.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
MODELS = {"tnl": "tnl-tiny", "transformer": "transformer-tiny"}
SCENARIOS = ("throughput", "conversation", "memory")
_SERVER_TTFT = "tnlm_time_to_first_token_seconds_sum"
_READY = re.compile(r"serving \S+ at (http://[\d.]+:\d+)/v1")


# ---------------------------------------------------------------------------------------------------
# the server process


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    log: list[str] = field(default_factory=list)

    def memory_mb(self) -> dict[str, float]:
        """The server's resident memory now and its peak, from /proc (Linux)."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        values = {k: int(v.split()[0]) / 1024 for k, v in (line.split(":", 1) for line in status.splitlines()) if k in ("VmRSS", "VmHWM")}
        return {"rss_mb": values["VmRSS"], "peak_mb": values["VmHWM"]}

    def metric(self, name: str) -> float:
        import urllib.request

        text = urllib.request.urlopen(self.url + "/metrics", timeout=30).read().decode()
        found = re.search(rf"^{name} (\S+)$", text, re.M)
        return float(found.group(1)) if found else float("nan")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(2)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def start_server(model: str, *args: str, threads: int) -> Server:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [sys.executable, "-c", "from tnlm.cli.main import run; run()", "serve", model, "--port", "0",
           "--threads", str(threads), *args]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=REPO)
    log: list[str] = []
    ready = threading.Event()

    def drain() -> None:
        for line in proc.stderr:
            log.append(line.rstrip("\n"))
            if _READY.search(line):
                ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    ready.wait(300)
    found = next((m for m in map(_READY.search, log) if m), None)
    if found is None:
        proc.kill()
        raise RuntimeError("the server did not start:\n" + "\n".join(log[-20:]))
    server = Server(proc, found.group(1), log)
    _warm_up(server, model)
    return server


def _warm_up(server: Server, model: str) -> None:
    """A small streamed completion and chat first, so that no measured request pays one-time costs:
    PyTorch's first calls in the server, the openai client's first parse of each response type here
    (~150 ms for the first chat chunk), the raw client's first request."""

    async def warm() -> None:
        async with _client(server) as client, _raw_client(server) as http:
            for kind, body in (("completion", {"prompt": "warm up " * 40}),
                               ("chat", {"messages": [{"role": "user", "content": "warm up " * 40}]})):  # fmt: skip
                for out in (await _stream(client, kind, model=model, max_tokens=4, **body),
                            await _stream_raw(http, kind, model=model, max_tokens=4, **body)):  # fmt: skip
                    if out.error:
                        raise RuntimeError(f"warm-up request failed: {out.error}")

    asyncio.run(warm())


# ---------------------------------------------------------------------------------------------------
# clients


def _text(n: int, rng: random.Random) -> str:
    """About n tokens of the byte tokenizer: lowercase words."""
    words = []
    while sum(len(w) + 1 for w in words) < n:
        words.append("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))))
    return " ".join(words)[:n]


@dataclass
class Outcome:
    ttft: float | None = None
    latency: float | None = None
    completion_tokens: int = 0
    cached_tokens: int = 0
    prompt_tokens: int = 0
    server_ttft: float | None = None  # the server's own measure (conversation scenario)
    text: str = ""
    error: str | None = None


async def _stream(client, kind: str, *, model: str, **kwargs) -> Outcome:
    """One streamed request: the time to its first text, its end, and its usage."""
    out, t0 = Outcome(), time.perf_counter()
    try:
        create = client.completions.create if kind == "completion" else client.chat.completions.create
        stream = await create(model=model, stream=True, stream_options={"include_usage": True}, temperature=0, **kwargs)
        async for chunk in stream:
            if chunk.choices and not (kind == "chat" and chunk.choices[0].delta.role):  # not the opening chunk
                piece = chunk.choices[0].text if kind == "completion" else chunk.choices[0].delta.content
                if piece is not None and out.ttft is None:  # the first token ("" while its text is held back)
                    out.ttft = time.perf_counter() - t0
                out.text += piece or ""
            if chunk.usage is not None:
                out.completion_tokens = chunk.usage.completion_tokens
                out.prompt_tokens = chunk.usage.prompt_tokens
                details = chunk.usage.prompt_tokens_details
                out.cached_tokens = details.cached_tokens if details else 0
        out.latency = time.perf_counter() - t0
        out.ttft = out.ttft if out.ttft is not None else out.latency
    except Exception as e:  # counted, reported, never retried
        out.error = f"{type(e).__name__}: {e}"
    return out


def _client(server: Server):
    import openai

    return openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=600)


def _raw_client(server: Server):
    import httpx

    return httpx.AsyncClient(base_url=server.url + "/v1", timeout=600)


_JSON_HEADERS = {"content-type": "application/json", "accept": "text/event-stream"}


async def _stream_raw(http, kind: str, *, model: str, **kwargs) -> Outcome:
    """The request _stream makes, through httpx: the JSON body is serialised before the clock starts and
    the SSE lines are read as they come, so the client's own cost is the same at every turn."""
    path = "/completions" if kind == "completion" else "/chat/completions"
    body = json.dumps({"model": model, "stream": True, "stream_options": {"include_usage": True}, "temperature": 0,
                       **kwargs}).encode()  # fmt: skip
    out, t0 = Outcome(), time.perf_counter()
    try:
        async with http.stream("POST", path, content=body, headers=_JSON_HEADERS) as response:
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {(await response.aread())[:300]!r}")
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                _take_chunk(out, kind, json.loads(data), t0)
        out.latency = time.perf_counter() - t0
        out.ttft = out.ttft if out.ttft is not None else out.latency
    except Exception as e:  # counted, reported, never retried
        out.error = f"{type(e).__name__}: {e}"
    return out


def _take_chunk(out: Outcome, kind: str, chunk: dict, t0: float) -> None:
    """One decoded SSE payload into `out`, by the rules _stream applies to the openai client's chunks."""
    if "error" in chunk:
        raise RuntimeError(chunk["error"].get("message"))
    choices = chunk.get("choices") or []
    if choices:
        delta = choices[0].get("delta") or {}
        if not (kind == "chat" and delta.get("role")):  # not the opening chunk
            piece = choices[0].get("text") if kind == "completion" else delta.get("content")
            if piece is not None and out.ttft is None:
                out.ttft = time.perf_counter() - t0
            out.text += piece or ""
    usage = chunk.get("usage")
    if usage:
        out.completion_tokens, out.prompt_tokens = usage["completion_tokens"], usage["prompt_tokens"]
        out.cached_tokens = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0


async def _load(server: Server, model: str, *, clients: int, requests: int, prompt_tokens: int, max_tokens: int,
                time_limit: float) -> tuple[list[Outcome], float]:  # fmt: skip
    rng = random.Random(0)
    prompts = [_text(prompt_tokens, rng) for _ in range(requests)]
    outcomes: list[Outcome] = []
    next_index = iter(range(requests))
    t0 = time.perf_counter()

    async def worker(client) -> None:
        for i in next_index:
            if time.perf_counter() - t0 > time_limit:
                return
            outcomes.append(await _stream(client, "completion", model=model, prompt=prompts[i], max_tokens=max_tokens))

    async with _client(server) as client:
        await asyncio.gather(*(worker(client) for _ in range(clients)))
    return outcomes, time.perf_counter() - t0


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def throughput(model_key: str, args) -> list[dict]:
    rows = []
    for clients in (1, args.clients):
        server = start_server(MODELS[model_key], "--max-batch", str(max(args.clients, 8)), threads=args.threads)
        try:
            outcomes, wall = asyncio.run(_load(server, MODELS[model_key], clients=clients, requests=args.requests,
                                               prompt_tokens=args.prompt_tokens, max_tokens=args.max_tokens,
                                               time_limit=args.time_limit))  # fmt: skip
            memory = server.memory_mb()
        finally:
            server.stop()
        ok = [o for o in outcomes if o.error is None]
        ttft, lat = [o.ttft for o in ok], [o.latency for o in ok]
        rows.append({
            "model": model_key, "clients": clients, "requests": len(outcomes), "errors": len(outcomes) - len(ok),
            "error_examples": sorted({o.error for o in outcomes if o.error})[:3], "wall_s": wall,
            "requests_per_s": len(ok) / wall, "tokens_per_s": sum(o.completion_tokens for o in ok) / wall,
            "ttft_p50": _pct(ttft, 50), "ttft_p90": _pct(ttft, 90), "ttft_p99": _pct(ttft, 99),
            "latency_p50": _pct(lat, 50), "latency_p90": _pct(lat, 90), "latency_p99": _pct(lat, 99), **memory,
        })  # fmt: skip
        print(f"  throughput {model_key:12s} {clients:2d} clients: {rows[-1]['tokens_per_s']:8.1f} tok/s, "
              f"{rows[-1]['errors']} errors", flush=True)  # fmt: skip
    return rows


async def _conversation(server: Server, model: str, *, turns: int, turn_tokens: int, reply_tokens: int,
                        system: str, seed: int, client_kind: str) -> list[Outcome]:  # fmt: skip
    """One conversation through the raw client ("raw") or the openai client ("openai")."""
    rng = random.Random(seed)
    messages = [{"role": "system", "content": system}] if system else []
    outcomes = []
    async with _raw_client(server) if client_kind == "raw" else _client(server) as client:
        http = client if client_kind == "raw" else client._client  # the openai client's own httpx pool
        (await http.get(server.url + "/health")).raise_for_status()  # the connection is open before turn 1
        for _ in range(turns):
            messages.append({"role": "user", "content": _text(turn_tokens, rng)})
            before = server.metric(_SERVER_TTFT)
            ask = _stream_raw if client_kind == "raw" else _stream
            out = await ask(client, "chat", model=model, messages=messages, max_tokens=reply_tokens)
            out.server_ttft = server.metric(_SERVER_TTFT) - before
            outcomes.append(out)
            messages.append({"role": "assistant", "content": out.text})
    return outcomes


def conversation(model_key: str, args, *, reuse: bool) -> dict:
    extra = ["--max-model-len", str(args.turns * (args.turn_tokens + args.reply_tokens + 40) + 1000)]
    extra += [] if reuse else ["--state-cache-mb", "0"]
    server = start_server(MODELS[model_key], *extra, threads=args.threads)
    runs: dict[str, list[list[Outcome]]] = {"raw": [], "openai": []}
    try:
        for r in range(args.repeats):  # the two clients take turns; their texts differ (seeds r and 1000 + r)
            for kind, seed in (("raw", r), ("openai", 1000 + r)):
                runs[kind].append(asyncio.run(_conversation(
                    server, MODELS[model_key], turns=args.turns, turn_tokens=args.turn_tokens,
                    reply_tokens=args.reply_tokens, system=args.system_prompt, seed=seed, client_kind=kind)))
    finally:
        server.stop()
    errors = sum(o.error is not None for kind in runs.values() for run in kind for o in run)

    def median(kind: str, value) -> list[float]:
        return [statistics.median(value(run[t]) for run in runs[kind] if run[t].error is None) for t in range(args.turns)]

    per_turn, openai_ttft = median("raw", lambda o: o.ttft), median("openai", lambda o: o.ttft)
    cached, prompt = median("raw", lambda o: o.cached_tokens), median("raw", lambda o: o.prompt_tokens)
    print(f"  conversation {model_key:12s} reuse={'on ' if reuse else 'off'}: TTFT first {per_turn[0] * 1000:6.1f} ms, "
          f"last {per_turn[-1] * 1000:6.1f} ms (openai client {openai_ttft[0] * 1000:.1f}, {openai_ttft[-1] * 1000:.1f}), "
          f"{errors} errors", flush=True)  # fmt: skip
    return {"model": model_key, "reuse": reuse, "ttft_per_turn": per_turn, "openai_ttft_per_turn": openai_ttft,
            "server_ttft_per_turn": median("raw", lambda o: o.server_ttft),
            "openai_server_ttft_per_turn": median("openai", lambda o: o.server_ttft), "cached_per_turn": cached,
            "prompt_per_turn": prompt, "new_per_turn": [p - c for p, c in zip(prompt, cached)], "errors": errors}  # fmt: skip


async def _open_conversations(server: Server, model: str, *, count: int, tokens: int) -> list[Outcome]:
    rng = random.Random(1)
    async with _client(server) as client:
        return [await _stream(client, "chat", model=model, max_tokens=1,
                              messages=[{"role": "user", "content": _text(tokens, rng)}]) for _ in range(count)]  # fmt: skip


def memory(model_key: str, count: int, args) -> dict:
    server = start_server(MODELS[model_key], "--max-model-len", str(args.conv_tokens + 64), "--state-cache-mb", "4096",
                          threads=args.threads)  # fmt: skip
    try:
        idle = server.memory_mb()
        outcomes = asyncio.run(_open_conversations(server, MODELS[model_key], count=count, tokens=args.conv_tokens))
        time.sleep(1)
        after = server.memory_mb()
        state_mb = server.metric("tnlm_state_cache_bytes") / 2**20
    finally:
        server.stop()
    errors = sum(o.error is not None for o in outcomes)
    print(f"  memory       {model_key:12s} {count:3d} conversations: rss {after['rss_mb']:.0f} MB "
          f"(idle {idle['rss_mb']:.0f}), peak {after['peak_mb']:.0f} MB, states {state_mb:.1f} MB", flush=True)  # fmt: skip
    return {"model": model_key, "conversations": count, "tokens_each": args.conv_tokens, "idle_rss_mb": idle["rss_mb"],
            "rss_mb": after["rss_mb"], "peak_mb": after["peak_mb"], "state_cache_mb": state_mb, "errors": errors}  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# report


def _throughput_table(rows: list[dict]) -> list[str]:
    lines = ["throughput (streamed completions, temperature 0)",
             "model        clients | req/s  tok/s | TTFT ms p50   p90   p99 | latency s p50  p90  p99 | peak MB | errors",
             "-" * 108]  # fmt: skip
    for r in rows:
        lines.append(
            f"{r['model']:12s} {r['clients']:7d} | {r['requests_per_s']:5.2f} {r['tokens_per_s']:6.1f} | "
            f"{r['ttft_p50'] * 1e3:12.0f} {r['ttft_p90'] * 1e3:5.0f} {r['ttft_p99'] * 1e3:5.0f} | "
            f"{r['latency_p50']:13.2f} {r['latency_p90']:4.2f} {r['latency_p99']:4.2f} | {r['peak_mb']:7.0f} | {r['errors']:6d}"
        )
    return lines


def _conversation_table(rows: list[dict]) -> list[str]:
    lines = [f"conversation ({len(rows[0]['ttft_per_turn'])} turns): TTFT ms per turn (median of repeats), "
             "raw httpx client (body serialised before the clock starts)"]
    for c in rows:
        ttft = c["ttft_per_turn"]
        shown = " ".join(f"{t * 1e3:5.0f}" for t in ttft)
        new = c["new_per_turn"]
        lines.append(f"{c['model']:12s} reuse {'on ' if c['reuse'] else 'off'} | {shown} | last/first {ttft[-1] / ttft[0]:4.2f}"
                     f" | new tokens first/last turn {new[0]:.0f}/{new[-1]:.0f}"
                     f" | cached at last turn {c['cached_per_turn'][-1]:.0f} of {c['prompt_per_turn'][-1]:.0f}")  # fmt: skip
        for label, key in (("  openai client", "openai_ttft_per_turn"), ("  server side", "server_ttft_per_turn")):
            shown = " ".join(f"{t * 1e3:5.0f}" for t in c[key])
            lines.append(f"{label:22s} | {shown} | last/first {c[key][-1] / c[key][0]:4.2f}")
    return lines


def _memory_table(rows: list[dict]) -> list[str]:
    lines = ["memory (open conversations kept by the server)",
             "model        conversations x tokens | idle MB | rss MB (added) | peak MB | states MB | errors", "-" * 92]  # fmt: skip
    for m in rows:
        lines.append(f"{m['model']:12s} {m['conversations']:13d} x {m['tokens_each']:6d} | {m['idle_rss_mb']:7.0f} | "
                     f"{m['rss_mb']:6.0f} ({m['rss_mb'] - m['idle_rss_mb']:5.0f}) | {m['peak_mb']:7.0f} | "
                     f"{m['state_cache_mb']:9.1f} | {m['errors']:6d}")  # fmt: skip
    return lines


def table(record: dict) -> str:
    parts = [(record["throughput"], _throughput_table), (record["conversation"], _conversation_table),
             (record["memory"], _memory_table)]  # fmt: skip
    return "\n\n".join("\n".join(make(rows)) for rows, make in parts if rows)


def targets(record: dict) -> list[tuple[str, float, bool]]:
    out = []
    for model in MODELS:
        rows = {r["clients"]: r for r in record["throughput"] if r["model"] == model}
        if len(rows) > 1:
            ratio = rows[max(rows)]["tokens_per_s"] / rows[1]["tokens_per_s"]
            out.append((f"{model}: tokens/s with {max(rows)} clients / 1 client (target >= 3)", ratio, ratio >= 3))
    conv = {(c["model"], c["reuse"]): c["ttft_per_turn"] for c in record["conversation"]}
    if conv:
        tnl = conv[("tnl", True)][-1] / conv[("tnl", True)][0]
        out.append(("tnl: last turn TTFT / first turn, state reuse on (target <= 1.2)", tnl, tnl <= 1.2))
        first3, last3 = statistics.mean(conv[("tnl", True)][:3]), statistics.mean(conv[("tnl", True)][-3:])
        out.append(("tnl: mean TTFT of the last 3 turns / the first 3, reuse on (target <= 1.2)", last3 / first3,
                    last3 / first3 <= 1.2))  # fmt: skip
        tfm = conv[("transformer", True)][-1] / conv[("transformer", True)][0]
        out.append(("transformer: last turn TTFT / first turn, KV reuse on (grows: > 1.2)", tfm, tfm > 1.2))
    mem = {m["model"]: m for m in record["memory"]}
    for key in ("rss_mb", "peak_mb") if mem else ():
        ratio = mem["tnl"][key] / mem["transformer"][key]
        out.append((f"memory ({key}): {mem['tnl']['conversations']} tnl / {mem['transformer']['conversations']} "
                    "transformer conversations (target < 1)", ratio, ratio < 1))  # fmt: skip
    errors = sum(r["errors"] for part in SCENARIOS for r in record[part])
    out.append(("errors in all scenarios (target 0)", errors, errors == 0))
    return out


def plot(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(16, 4.5))
    for model in MODELS:
        rows = [r for r in record["throughput"] if r["model"] == model]
        if rows:
            a.plot([r["clients"] for r in rows], [r["tokens_per_s"] for r in rows], marker="o", label=model)
    a.set(xlabel="concurrent clients", ylabel="generated tokens/s", title="throughput")
    for conv in record["conversation"]:
        ttft = [t * 1e3 for t in conv["ttft_per_turn"]]
        line = b.plot(range(1, len(ttft) + 1), ttft, marker=".", linestyle="-" if conv["reuse"] else ":",
                      label=f"{conv['model']} reuse {'on' if conv['reuse'] else 'off'}")[0]  # fmt: skip
        if conv["reuse"]:
            b.plot(range(1, len(ttft) + 1), [t * 1e3 for t in conv["openai_ttft_per_turn"]], linestyle="--",
                   color=line.get_color(), alpha=0.5, label=f"{conv['model']} reuse on, openai client")  # fmt: skip
    b.set(xlabel="turn", ylabel="TTFT (ms)", title="multi-turn conversation")
    labels = [f"{m['model']}\n{m['conversations']} x {m['tokens_each']}" for m in record["memory"]]
    if labels:
        c.bar(labels, [m["rss_mb"] for m in record["memory"]], label="rss")
        c.bar(labels, [m["idle_rss_mb"] for m in record["memory"]], label="idle rss")
    c.set(ylabel="server MB", title="open conversations")
    for ax in (a, b, c):
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes: checks that the benchmark runs")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=48)
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--time-limit", type=float, default=300.0, help="no new request after this many seconds")
    p.add_argument("--turns", type=int, default=20)
    p.add_argument("--turn-tokens", type=int, default=200)
    p.add_argument("--reply-tokens", type=int, default=32)
    p.add_argument("--system-prompt", default="", help="the conversation's system message (default: none)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--open-tnl", type=int, default=64)
    p.add_argument("--open-tfm", type=int, default=4)
    p.add_argument("--conv-tokens", type=int, default=4096)
    p.add_argument("--threads", type=int, default=1, help="the server's PyTorch threads")
    p.add_argument("--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS), help="run only these scenarios")
    p.add_argument("--out", type=Path, default=RESULTS / "serve_load")
    args = p.parse_args()
    if args.quick:
        args.requests, args.max_tokens, args.turns, args.turn_tokens = 8, 16, 4, 64
        args.repeats, args.open_tnl, args.open_tfm, args.conv_tokens = 1, 4, 1, 512
    return args


def main() -> None:
    args = _args()
    record = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}}  # fmt: skip
    runs = {
        "throughput": lambda: [row for model in MODELS for row in throughput(model, args)],
        "conversation": lambda: [conversation(model, args, reuse=reuse) for model in MODELS for reuse in (True, False)],
        "memory": lambda: [memory("tnl", args.open_tnl, args), memory("transformer", args.open_tfm, args)],
    }
    for name in SCENARIOS:
        record[name] = runs[name]() if name in args.only else []
    checks = targets(record)
    record["targets"] = [{"name": n, "value": v, "pass": ok} for n, v, ok in checks]
    report = table(record) + "\n\n" + "\n".join(f"{'PASS' if ok else 'MISS'}  {n}: {v:.2f}" for n, v, ok in checks)
    print("\n" + report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps(record, indent=2)), (".txt", report + "\n")):
        tmp = args.out.with_suffix(suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(args.out.with_suffix(suffix))
    plot(record, args.out.with_suffix(".png"))
    print(f"wrote {args.out.with_suffix('.json')}, .txt and .png")


if __name__ == "__main__":
    main()
