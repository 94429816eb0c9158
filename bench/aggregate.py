#!/usr/bin/env python3
"""Turns one benchmark run (bench/results/raw/<date>/) into markdown tables.

    aggregate.py RAW_DIR

Reads RAW_DIR/index.tsv (one line per measured run, written by run.sh and
instructions.sh: scenario, round, peer, tool, raw output file, key=value...)
and the raw outputs it names (wrk, h2load, bench-client, callgrind, perf or
strace), and prints:

- per scenario and peer: the median over rounds, the spread (min-max), and
  every figure as a ratio to nginx *from the same round* (the median of the
  per-round ratios), so that noise common to a round cancels;
- memory, reload, instructions and syscalls per request;
- the goals, each with its figure, ratio and met / not met.

Standard library only.
"""

import os
import re
import statistics
import sys
from collections import defaultdict

# ---------------------------------------------------------------- parsing


def unit_ms(value):
    """'1.23ms' / '456.78us' / '1.2s' -> milliseconds."""
    m = re.match(r"([\d.]+)(us|ms|s|m)$", value.strip())
    if not m:
        return None
    v, u = float(m.group(1)), m.group(2)
    return v * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[u]


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def parse_wrk(text):
    r = {}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", text)
    if m:
        r["requests"] = int(m.group(1))
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if m:
        r["rps"] = float(m.group(1))
    for q, key in (("50", "p50"), ("90", "p90"), ("99", "p99")):
        m = re.search(r"^\s+%s%%\s+(\S+)" % q, text, re.M)
        if m:
            r[key] = unit_ms(m.group(1))
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        errors += sum(int(x) for x in m.groups())
    r["errors"] = errors
    return r


def parse_rate(text):
    r = {}
    m = re.search(r"rate: (.*)", text)
    if not m:
        return r
    toks = m.group(1).split()
    kv = dict(zip(toks[::2], toks[1::2]))
    r["requests"] = int(kv.get("sent", 0))
    r["rps"] = float(kv.get("achieved_rps", 0))
    r["errors"] = int(kv.get("failed", 0))
    for k in ("p50", "p90", "p99", "p999"):
        if k + "_us" in kv:
            r[k] = int(kv[k + "_us"]) / 1000.0
    return r


def parse_h2load(text):
    r = {}
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", text)
    if m:
        r["rps"] = float(m.group(1))
    m = re.search(
        r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout",
        text,
    )
    if m:
        r["requests"] = int(m.group(1))
        r["errors"] = int(m.group(2)) + int(m.group(3)) + int(m.group(4))
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if m:
        r["errors"] = r.get("errors", 0) + int(m.group(3)) + int(m.group(4))
    m = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", text)
    if m:
        r["mean"] = unit_ms(m.group(3))
    return r


def parse_syscalls(path, tool):
    """{syscall: count} from perf stat -x, or strace -c output."""
    counts = {}
    text = read(path)
    if tool == "perf":
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            f = line.split(",")
            if len(f) < 3:
                continue
            if f[2] == "raw_syscalls:sys_enter":
                name = "(total)"
            elif f[2].startswith("syscalls:sys_enter_"):
                name = f[2][len("syscalls:sys_enter_"):]
            else:
                continue
            try:
                counts[name] = int(f[0])
            except ValueError:
                pass  # <not counted>
    else:
        for line in text.splitlines():
            f = line.split()
            if len(f) >= 5 and re.match(r"[\d.]+$", f[0]) and f[-1] != "total":
                # % time, seconds, usecs/call, calls, [errors], syscall
                try:
                    counts[f[-1]] = int(f[3])
                except ValueError:
                    pass
    return counts


def kv_of(fields):
    out = {}
    for f in fields:
        if "=" in f:
            k, v = f.split("=", 1)
            out[k] = v
    return out


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------- figures


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def spread(xs):
    xs = [x for x in xs if x is not None]
    return (min(xs), max(xs)) if xs else (None, None)


def fmt(v, digits=1):
    if v is None:
        return "–"
    if abs(v) >= 1000 and digits <= 1:
        return "{:,.0f}".format(v)
    return "{:.{d}f}".format(v, d=digits)


def fmt_ratio(v):
    return "–" if v is None else "{:.2f}×".format(v)


def fmt_busy(rows):
    """Proxy / its core (all processes) / load core, medians, in %."""
    return "%s / %s / %s" % tuple(
        fmt(med([r.get(k) for r in rows]), 0) for k in ("busy", "core_busy", "load_busy")
    )


def fmt_spread(xs, digits=1):
    lo, hi = spread(xs)
    if lo is None:
        return "–"
    return "{} ({}–{})".format(fmt(med(xs), digits), fmt(lo, digits), fmt(hi, digits))


PEER_ORDER = ["direct", "nginx", "haproxy", "bare", "towergate"]
PEER_NAME = {
    "direct": "direct (upstream alone)",
    "nginx": "nginx",
    "haproxy": "HAProxy",
    "bare": "bare-proxy (floor)",
    "towergate": "**towergate**",
}


def order(peers):
    return sorted(peers, key=lambda p: (PEER_ORDER.index(p) if p in PEER_ORDER else 99, p))


class Run:
    def __init__(self, raw):
        self.raw = raw
        self.load = defaultdict(list)  # (scenario, kind) -> [row]
        self.memory = []
        self.reload = []
        self.instr = {}
        self.sys = {}
        self.notes = []
        # (scenario, peer, tool) -> [(round, path, kv)]: the redis and jwks
        # scenarios' own records (Redis commands, outcomes, JWKS fetches).
        self.extra = defaultdict(list)
        index = os.path.join(raw, "index.tsv")
        for line in read(index).splitlines():
            f = line.split("\t")
            if len(f) < 5:
                continue
            scenario, rnd, peer, tool, path = f[:5]
            kv = kv_of(f[5:])
            if tool in ("wrk", "tls", "mib", "rate", "h2") and scenario != "reload":
                self.add_load(scenario, int(rnd), peer, tool, path, kv)
            elif tool == "mem":
                self.memory.append((peer, kv, read(path)))
            elif scenario == "reload":
                self.reload.append((int(rnd), tool, path, kv))
            elif tool == "instr":
                self.instr[peer] = kv
            elif tool == "syscalls":
                self.sys[peer] = kv
            elif tool in ("failed", "skipped"):
                self.notes.append("%s / %s: %s" % (scenario, peer, kv.get("note", tool)))
            else:
                self.extra[(scenario, peer, tool)].append((int(rnd), path, kv))

    def add_load(self, scenario, rnd, peer, kind, path, kv):
        text = read(path)
        if kind == "rate":
            r = parse_rate(text)
        elif kind == "h2":
            r = parse_h2load(text)
        else:
            r = parse_wrk(text)
        r.update(round=rnd, peer=peer)
        clk = num(kv.get("clk_tck")) or 100.0
        ticks, up, wall = num(kv.get("proxy_ticks")), num(kv.get("up_ticks")), num(kv.get("wall"))
        n = r.get("requests")
        if n and ticks is not None:
            r["cpu_us"] = ticks / clk / n * 1e6
        if n and up is not None:
            r["up_us"] = up / clk / n * 1e6
        if wall and ticks is not None:
            r["busy"] = ticks / clk / wall * 100
        r["load_busy"] = num(kv.get("load_busy"))
        r["core_busy"] = num(kv.get("proxy_core_busy"))
        if not n:
            self.notes.append("%s round %d %s: no result (see %s)" % (scenario, rnd, peer, path))
        self.load[(scenario, kind)].append(r)

    # ratio of peer's metric to nginx's (or BASE's) in the same round, then
    # the median
    def ratio(self, rows, peer, metric, base="nginx"):
        by_round = defaultdict(dict)
        for r in rows:
            by_round[r["round"]][r["peer"]] = r
        ratios = []
        for rr in by_round.values():
            a, b = rr.get(peer, {}).get(metric), rr.get(base, {}).get(metric)
            if a is not None and b:
                ratios.append(a / b)
        return med(ratios)

    def figure(self, scenario, kind, peer, metric):
        rows = [r for r in self.load.get((scenario, kind), []) if r["peer"] == peer]
        return med([r.get(metric) for r in rows])


# ---------------------------------------------------------------- tables

TITLES = {
    ("plain", "wrk"): "Plain proxy, 1 route (wrk, closed loop, {conns} connections)",
    ("plain", "rate"): "Plain proxy, 1 route, the same load for all: {rate} requests/s (bench-client, open loop)",
    ("routes100", "wrk"): "100 routes, the last one matching (wrk)",
    ("routes10k", "wrk"): "10,000 routes, the last one matching (wrk)",
    ("tls", "tls"): "TLS termination (wrk over HTTPS, keep-alive: no handshakes in the steady state)",
    ("mib", "mib"): "1 MiB responses (wrk, {mib_conns} connections)",
    ("h2", "h2"): "HTTP/2 clients (h2load, h2c prior knowledge, {h2})",
}


def load_table(run, scenario, kind, out, settings):
    rows = run.load.get((scenario, kind), [])
    if not rows:
        return
    title = TITLES.get((scenario, kind), "%s (%s)" % (scenario, kind)).format(**settings)
    nrounds = len({r["round"] for r in rows})
    out.append("### %s\n" % title)
    mib = kind == "mib"
    h2 = kind == "h2"
    lat = "mean ms" if h2 else "p50 ms | p99 ms"
    if mib:
        head = "| peer | MiB/s, median (min–max) | ×nginx | proxy CPU ms per MiB | ×nginx | p50 ms | p99 ms | busy % ² | errors |"
    elif h2:
        head = "| peer | req/s, median (min–max) | ×nginx | proxy CPU µs/req | ×nginx | mean ms | busy % ² | errors |"
    elif kind == "rate":
        head = "| peer | achieved req/s | proxy CPU µs/req | ×nginx | p50 ms | p99 ms | p99 ×nginx | p99.9 ms | errors |"
    else:
        head = "| peer | req/s, median (min–max) | ×nginx | proxy CPU µs/req, median (min–max) | ×nginx | p50 ms | p99 ms | p99 ×nginx | busy % ² | upstream µs/req | errors |"
    out.append(head)
    out.append("|" + "---|" * (head.count("|") - 1))
    for peer in order({r["peer"] for r in rows}):
        pr = [r for r in rows if r["peer"] == peer]
        rps = [r.get("rps") for r in pr]
        cpu = [r.get("cpu_us") for r in pr]
        errors = sum(r.get("errors", 0) or 0 for r in pr)
        name = PEER_NAME.get(peer, peer)
        cpu_label = fmt_spread(cpu)
        if peer == "direct":
            # The "proxy" here is the upstream itself.
            name += " ¹"
        if mib:
            cpu_ms = [c / 1000 if c is not None else None for c in cpu]
            out.append(
                "| %s | %s | %s | %s | %s | %s | %s | %s | %d |"
                % (
                    name,
                    fmt_spread(rps, 0),
                    fmt_ratio(run.ratio(rows, peer, "rps")),
                    fmt_spread(cpu_ms, 2),
                    fmt_ratio(run.ratio(rows, peer, "cpu_us")),
                    fmt(med([r.get("p50") for r in pr]), 2),
                    fmt(med([r.get("p99") for r in pr]), 2),
                    fmt_busy(pr),
                    errors,
                )
            )
        elif h2:
            out.append(
                "| %s | %s | %s | %s | %s | %s | %s | %d |"
                % (
                    name,
                    fmt_spread(rps, 0),
                    fmt_ratio(run.ratio(rows, peer, "rps")),
                    cpu_label,
                    fmt_ratio(run.ratio(rows, peer, "cpu_us")),
                    fmt(med([r.get("mean") for r in pr]), 2),
                    fmt_busy(pr),
                    errors,
                )
            )
        elif kind == "rate":
            out.append(
                "| %s | %s | %s | %s | %s | %s | %s | %s | %d |"
                % (
                    name,
                    fmt(med(rps), 0),
                    cpu_label,
                    fmt_ratio(run.ratio(rows, peer, "cpu_us")),
                    fmt(med([r.get("p50") for r in pr]), 3),
                    fmt(med([r.get("p99") for r in pr]), 3),
                    fmt_ratio(run.ratio(rows, peer, "p99")),
                    fmt(med([r.get("p999") for r in pr]), 3),
                    errors,
                )
            )
        else:
            out.append(
                "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |"
                % (
                    name,
                    fmt_spread(rps, 0),
                    fmt_ratio(run.ratio(rows, peer, "rps")),
                    cpu_label,
                    fmt_ratio(run.ratio(rows, peer, "cpu_us")),
                    fmt(med([r.get("p50") for r in pr]), 2),
                    fmt(med([r.get("p99") for r in pr]), 2),
                    fmt_ratio(run.ratio(rows, peer, "p99")),
                    fmt_busy(pr),
                    fmt(med([r.get("up_us") for r in pr]), 1) if peer != "direct" else "(same)",
                    errors,
                )
            )
    out.append("")
    out.append("%d round(s). " % nrounds + FOOT.get(kind, FOOT["wrk"]) + BUSY)
    out.append("")


BUSY = (
    " ² Busy: the proxy's CPU time / wall time, then how busy its core was with every process on the"
    " machine, then the load core (load generator + upstream). A proxy below 100% on a core that is"
    " itself at 100% is sharing it with something else (here: other builds on the machine)."
)

FOOT = {
    "wrk": "Proxy CPU = utime+stime of all the proxy's processes over the run / requests served. "
    "×nginx = median over rounds of the ratio to nginx in the same round. "
    "¹ direct: wrk straight to the upstream; its CPU column is the upstream's own cost per request.",
    "rate": "Latency is timed from when each request was due (no coordinated omission); "
    "CPU per request at a fixed, lower load is higher than at saturation (less batching per wake-up).",
    "mib": "Proxy CPU per MiB = proxy CPU time / responses (each 1 MiB). "
    "¹ direct: the upstream's own cost.",
    "h2": "h2load reports no percentiles: mean time per request. Upstream side is HTTP/1.1 for every proxy.",
}
FOOT["tls"] = FOOT["wrk"]


# The towergate variants (run.sh variant_scenario; lib.sh `variant`): each
# scenario's rows are compared with its base row from the same round.
VARIANTS = {
    "features": (
        "tg-plain",
        ["nginx", "tg-plain", "tg-plain-keys", "tg-jwt", "tg-es256", "tg-rl", "tg-rl-keys", "tg-redis", "tg-full"],
        "Features on the request path (wrk, {conns} connections)",
    ),
    "observe": (
        "tg-obs-off",
        ["nginx", "nginx-log", "tg-obs-off", "tg-obs-on", "tg-obs-log", "tg-obs-trace"],
        "Observation cost: observe layers off vs on (wrk, {conns} connections)",
    ),
    "accesslog": (
        "tg-plain",
        ["nginx", "tg-plain", "tg-obs-log"],
        "The JSON access log alone: plain towergate (request ids and metrics on) without and with it (wrk, {conns} connections)",
    ),
    "metrics": (
        "tg-obs-off",
        ["nginx", "tg-obs-off", "tg-metrics"],
        "Metrics alone: observability off vs on without request ids (wrk, {conns} connections)",
    ),
    "cache": (
        "tg-nocache",
        ["nginx", "tg-nocache", "tg-cached"],
        "Response cache: hits vs the same path proxied (wrk, {conns} connections)",
    ),
}
VARIANT_NAME = {
    "nginx": "nginx, plain route",
    "tg-plain": "towergate, plain route `/api/s0/`",
    "tg-jwt": "+ JWT RS256 `/jwt/`",
    "tg-es256": "+ JWT ES256, keys from a JWKS `/jwks/`",
    "tg-redis": "+ rate limit, buckets in Redis `/rlredis/`",
    "tg-rl": "+ rate limit, in memory `/rl/`",
    "tg-rl-keys": "+ rate limit, in memory, a new key on every request `/rlkeys/`",
    "tg-plain-keys": "towergate, plain route, with `/rlkeys/`'s new `x-api-key` on every request",
    "tg-full": "+ JWT + rate limit + metrics + access log (file) `/full/` ³",
    "nginx-log": "nginx, plain route, with a JSON access log (file, 64 KiB buffer) ⁴",
    "tg-obs-off": "towergate, `observability.enabled: false`",
    "tg-obs-on": "towergate, observe on: request id, span, metrics, access log (file), OTLP tracing at 1 % ³",
    "tg-obs-log": "towergate, observe on with access log (file), no tracing",
    "tg-obs-trace": "towergate, observe on with OTLP tracing at 1 %, no access log",
    "tg-metrics": "towergate, metrics alone (observability on, `generate_request_id: false`)",
    "tg-nocache": "towergate, route without cache (proxied)",
    "tg-cached": "towergate, route with `cache: { ttl: 60s }` (hits)",
}


def variant_table(run, scenario, out, settings):
    base, labels, title = VARIANTS[scenario]
    rows = run.load.get((scenario, "wrk"), [])
    if not rows:
        return
    nrounds = len({r["round"] for r in rows})
    out.append("### %s\n" % title.format(**settings))
    head = (
        "| variant | req/s, median (min–max) | ×base | ×nginx | proxy CPU µs/req, median (min–max) "
        "| ×base | ×nginx | p50 ms | p99 ms | p99 ×base | busy % ² | errors |"
    )
    out.append(head)
    out.append("|" + "---|" * (head.count("|") - 1))
    present = {r["peer"] for r in rows}
    for peer in [l for l in labels if l in present] + sorted(present - set(labels)):
        pr = [r for r in rows if r["peer"] == peer]
        out.append(
            "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |"
            % (
                VARIANT_NAME.get(peer, peer),
                fmt_spread([r.get("rps") for r in pr], 0),
                fmt_ratio(run.ratio(rows, peer, "rps", base)),
                fmt_ratio(run.ratio(rows, peer, "rps")),
                fmt_spread([r.get("cpu_us") for r in pr]),
                fmt_ratio(run.ratio(rows, peer, "cpu_us", base)),
                fmt_ratio(run.ratio(rows, peer, "cpu_us")),
                fmt(med([r.get("p50") for r in pr]), 2),
                fmt(med([r.get("p99") for r in pr]), 2),
                fmt_ratio(run.ratio(rows, peer, "p99", base)),
                fmt_busy(pr),
                sum(r.get("errors", 0) or 0 for r in pr),
            )
        )
    out.append("")
    out.append(
        "%d round(s). ×base = median over rounds of the ratio to `%s` in the same round; "
        "×nginx the same against nginx (plain route) in the same round. "
        % (nrounds, VARIANT_NAME[base].replace("`", ""))
        + FOOT["wrk"].split(" ¹")[0]
        + BUSY
        + " ³ A second towergate process with its own config (the access log is global), "
        "pinned on the same core, idle while the others are measured."
        + (
            " ⁴ A second nginx (its own ports and config), the same way; its line has "
            "the members of towergate's that nginx knows (time, request id, client, method, "
            "path, upstream, status, bytes, and its request time), through a 64 KiB buffer."
            if "nginx-log" in labels
            else ""
        )
    )
    out.append("")


def variant_instr_table(run, out):
    labels = [l for l in run.instr if l.startswith("tg-")] + [
        l for l in run.sys if l.startswith("tg-") and l not in run.instr
    ]
    if not labels:
        return
    kv0 = run.instr.get(labels[0], {})
    out.append("### Instructions and syscalls per request, towergate variants (noise-free)\n")
    out.append("| variant | instructions/req | ×base | syscalls/req | ×base |")
    out.append("|---|---|---|---|---|")
    seen = set()
    for scenario, (base, order_, _) in VARIANTS.items():
        b_ir = per_req(run.instr.get(base, {}))
        b_sys = sys_per_req(run.sys[base])[0] if base in run.sys else None
        for l in order_:
            # A label in two scenarios (tg-plain, tg-obs-log) once, with
            # the first one's base.
            if l not in labels or l in seen:
                continue
            seen.add(l)
            ir = per_req(run.instr.get(l, {}))
            tot = sys_per_req(run.sys[l])[0] if l in run.sys else None
            out.append(
                "| %s | %s | %s | %s | %s |"
                % (
                    VARIANT_NAME.get(l, l),
                    fmt(ir, 0),
                    fmt_ratio(ir / b_ir if ir and b_ir else None),
                    fmt(tot, 2),
                    fmt_ratio(tot / b_sys if tot and b_sys else None),
                )
            )
    out.append("")
    out.append(
        "Same method as the table above (callgrind, N1=%s, N2=%s, 4 connections; bench-client "
        "sends the bearer token on the JWT routes, and a new `x-api-key` on every request to "
        "`/rlkeys/`; `/rlredis/` runs in a process of its own, its buckets in our own Redis on the "
        "load CPU). ×base: against the plain route, observability "
        "off, and the uncached route respectively. The JWT is the same token on every request, so "
        "after the first it is a verified-token cache hit (as for a client reusing its token)."
        % (kv0.get("n1", "?"), kv0.get("n2", "?"))
    )
    out.append("")


def memory_table(run, out):
    if not run.memory:
        return
    out.append("### Memory: RSS idle and with idle keep-alive connections\n")
    out.append("| peer | RSS idle MB | RSS with N idle conns MB | N opened | alive at hold end | KB per idle connection |")
    out.append("|---|---|---|---|---|---|")
    for peer, kv, text in sorted(run.memory, key=lambda x: order([x[0]])[0]):
        idle, loaded = num(kv.get("rss_idle_kb")), num(kv.get("rss_loaded_kb"))
        m = re.search(r"ready (\d+) alive (\d+)", text)
        e = re.search(r"end alive (\d+)", text)
        alive = int(m.group(2)) if m else None
        per = (loaded - idle) / alive if (alive and idle is not None and loaded is not None) else None
        out.append(
            "| %s | %s | %s | %s | %s | %s |"
            % (
                PEER_NAME.get(peer, peer),
                fmt(idle / 1024 if idle is not None else None, 1),
                fmt(loaded / 1024 if loaded is not None else None, 1),
                m.group(1) if m else "–",
                e.group(1) if e else "–",
                fmt(per, 1),
            )
        )
    out.append("")
    out.append(
        "RSS = VmRSS summed over the proxy's processes (nginx: master + worker). Idle: after "
        "start-up and 200 requests. Then bench-client opens the connections (64 at a time), "
        "makes one request on each and holds them; RSS is read while they are held. "
        "KB per connection = (RSS with − RSS idle) / connections alive."
    )
    out.append("")


def reload_table(run, out):
    if not run.reload:
        return
    checks = [num(kv.get("check_s")) for _, tool, _, kv in run.reload if tool == "check"]
    probes = []
    for _, tool, path, _ in run.reload:
        if tool == "probe":
            m = re.search(r"until-ok ms ([\d.]+)", read(path))
            probes.append(float(m.group(1)) if m else None)
    wrk = [(path, kv) for _, tool, path, kv in run.reload if tool == "wrk"]
    out.append("### Reload of 10,000 routes under load (towergate)\n")
    out.append("| figure | value |")
    out.append("|---|---|")
    if checks:
        out.append("| `towergate check` of the file (parse + validate + compile), median of %d | %s ms |" % (len(checks), fmt(med(checks) * 1000 if med(checks) else None, 0)))
    if probes:
        ok = [p for p in probes if p is not None]
        out.append(
            "| file replaced + SIGHUP → new route answers, median (max) of %d | %s ms (%s) |"
            % (len(probes), fmt(med(ok), 0), fmt(max(ok) if ok else None, 0))
        )
        if len(ok) < len(probes):
            out.append("| reloads whose new route never answered | %d |" % (len(probes) - len(ok)))
    for path, kv in wrk:
        r = parse_wrk(read(path))
        out.append("| requests served during the run (wrk, %s connections) | %s |" % (CONNS, fmt(r.get("requests"), 0)))
        out.append("| failed requests (non-2xx + socket errors) | **%d** |" % r.get("errors", 0))
        out.append("| p99 over the run | %s ms |" % fmt(r.get("p99"), 2))
        out.append("| \"configuration reloaded\" log lines | %s |" % kv.get("reload_lines", "–"))
        rss = num(kv.get("rss_kb"))
        out.append("| RSS after the reloads | %s MB |" % fmt(rss / 1024 if rss else None, 1))
    out.append("")
    out.append(
        "The time includes the reloader's 150 ms debounce (towergate waits for a burst of file events to settle before reading the file)."
    )
    out.append("")


def per_req(kv):
    n1, n2 = num(kv.get("n1")), num(kv.get("n2"))
    a, b = num(kv.get("ir1")), num(kv.get("ir2"))
    if None in (n1, n2, a, b) or n2 == n1:
        return None
    return (b - a) / (n2 - n1)


def sys_per_req(kv):
    n1, n2 = num(kv.get("n1")), num(kv.get("n2"))
    tool = kv.get("tool", "perf")
    c1 = parse_syscalls(kv.get("file1", ""), tool)
    c2 = parse_syscalls(kv.get("file2", ""), tool)
    if not c2 or not n1 or not n2 or n2 == n1:
        return None, {}
    names = set(c1) | set(c2)
    per = {k: (c2.get(k, 0) - c1.get(k, 0)) / (n2 - n1) for k in names}
    total = per.pop("(total)", None)
    if total is None:
        total = sum(per.values())
    else:
        # perf: the total counts every syscall, the breakdown a list of them.
        per["other"] = total - sum(per.values())
    per = {k: v for k, v in per.items() if abs(v) >= 0.005}
    return total, per


INSTR_NAME = {
    "bare-h2": "bare-proxy, HTTP/2 clients (h2load, h2c, 10 streams per connection)",
    "towergate-h2": "**towergate**, HTTP/2 clients (the same) ⁵",
    "bare-mt": "bare-proxy, multi-thread scheduler (1 worker)",
    "towergate": "**towergate** (1 route)",
    "towergate-r100": "towergate, 100 routes",
    "towergate-r10k": "towergate, 10,000 routes",
}


def instr_table(run, out):
    if not run.instr and not run.sys:
        return
    labels = [l for l in ["nginx", "haproxy", "bare", "bare-mt", "towergate", "towergate-r100", "towergate-r10k"] if l in run.instr or l in run.sys]
    labels += sorted((set(run.instr) | set(run.sys)) - set(labels) - {l for l in set(run.instr) | set(run.sys) if l.startswith("tg-")})
    if not labels:
        return
    tool = next((kv.get("tool") for kv in run.sys.values()), "–")
    bare_ir = per_req(run.instr.get("bare", {}))
    bare_sys = sys_per_req(run.sys.get("bare", {}))[0] if "bare" in run.sys else None
    kv0 = next(iter(run.instr.values()), next(iter(run.sys.values()), {}))
    out.append("### Instructions and syscalls per request (noise-free)\n")
    out.append("| proxy | instructions/req | ×bare-proxy | syscalls/req (%s) | ×bare-proxy | syscalls per request, by kind |" % tool)
    out.append("|---|---|---|---|---|---|")
    bare_h2_ir = per_req(run.instr.get("bare-h2", {}))
    bare_h2_sys = sys_per_req(run.sys.get("bare-h2", {}))[0] if "bare-h2" in run.sys else None
    for l in labels:
        ir = per_req(run.instr.get(l, {}))
        tot, per = sys_per_req(run.sys.get(l, {})) if l in run.sys else (None, {})
        # HTTP/2 clients: against bare-proxy with HTTP/2 clients.
        b_ir, b_sys = (bare_h2_ir, bare_h2_sys) if l.endswith("-h2") else (bare_ir, bare_sys)
        top = ", ".join("%s %.2f" % (k, v) for k, v in sorted(per.items(), key=lambda x: (-round(x[1], 2), x[0]))[:6])
        out.append(
            "| %s | %s | %s | %s | %s | %s |"
            % (
                INSTR_NAME.get(l, PEER_NAME.get(l, l)),
                fmt(ir, 0),
                fmt_ratio(ir / b_ir if ir and b_ir else None),
                fmt(tot, 2),
                fmt_ratio(tot / b_sys if tot and b_sys else None),
                top or "–",
            )
        )
    out.append("")
    out.append(
        "Instructions: callgrind Ir (user space) of the whole proxy process, (Ir(N2) − Ir(N1)) / (N2 − N1) "
        "with N1=%s, N2=%s requests over 4 keep-alive connections (bench-client); start-up, connection set-up and "
        "shutdown cancel out. Syscalls: the same difference, with %s attached to the running proxy. "
        "Per-request profiles: `profile-<proxy>-{inclusive,self}.txt` in the raw directory."
        % (kv0.get("n1", "?"), kv0.get("n2", "?"), "perf tracepoints (`raw_syscalls:sys_enter` for the total, `syscalls:sys_enter_<name>` for the breakdown)" if tool == "perf" else "strace -c -f")
        + (
            " ⁵ HTTP/2 rows: the requests come from h2load instead (h2c, the same connections, 10 "
            "streams each); ×bare-proxy is against bare-proxy with HTTP/2 clients."
            if any(l.endswith("-h2") for l in labels)
            else ""
        )
    )
    out.append("")


def goals(run, out):
    # Three decimals: a goal at parity must not read "1.00×, not met".
    def fmt_ratio(v):
        return "–" if v is None else "{:.3f}×".format(v)

    out.append("### Goals (computed from this run)\n")
    out.append("| goal | figure | ratio | status |")
    out.append("|---|---|---|---|")

    def status(ok):
        return "–" if ok is None else ("**met**" if ok else "**not met**")

    def cpu_goal_row(scenario, label, base, goal, title):
        """A goal row: `label`'s CPU per request against `base`'s in the same
        rounds of `scenario`, met at or below `goal` (no row without the run)."""
        rows = run.load.get((scenario, "wrk"), [])
        if not rows:
            return
        r = run.ratio(rows, label, "cpu_us", base)
        out.append(
            "| %s | %s µs vs %s µs | %s | %s |"
            % (
                title,
                fmt(run.figure(scenario, "wrk", label, "cpu_us"), 1),
                fmt(run.figure(scenario, "wrk", base, "cpu_us"), 1),
                fmt_ratio(r),
                status(None if r is None else r <= goal),
            )
        )

    rows = run.load.get(("plain", "wrk"), [])
    tg = run.figure("plain", "wrk", "towergate", "cpu_us")
    ng = run.figure("plain", "wrk", "nginx", "cpu_us")
    r = run.ratio(rows, "towergate", "cpu_us") if rows else None
    out.append(
        "| plain: proxy CPU per request ≤ 0.8× nginx | towergate %s µs, nginx %s µs | %s | %s |"
        % (fmt(tg, 1), fmt(ng, 1), fmt_ratio(r), status(None if r is None else r <= 0.8))
    )
    ir_t, ir_b = per_req(run.instr.get("towergate", {})), per_req(run.instr.get("bare", {}))
    rr = ir_t / ir_b if ir_t and ir_b else None
    out.append(
        "| plain: instructions per request ≤ 1.3× bare-proxy | towergate %s, bare-proxy %s | %s | %s |"
        % (fmt(ir_t, 0), fmt(ir_b, 0), fmt_ratio(rr), status(None if rr is None else rr <= 1.3))
    )
    s_t = sys_per_req(run.sys["towergate"])[0] if "towergate" in run.sys else None
    s_b = sys_per_req(run.sys["bare"])[0] if "bare" in run.sys else None
    rs = s_t / s_b if s_t and s_b else None
    out.append(
        "| plain: syscalls per request ≤ bare-proxy | towergate %s, bare-proxy %s | %s | %s |"
        % (fmt(s_t, 2), fmt(s_b, 2), fmt_ratio(rs), status(None if rs is None else rs <= 1.0 + 1e-9))
    )
    rate_rows = run.load.get(("plain", "rate"), [])
    p_t = run.figure("plain", "rate", "towergate", "p99")
    p_n = run.figure("plain", "rate", "nginx", "p99")
    rp = run.ratio(rate_rows, "towergate", "p99") if rate_rows else None
    out.append(
        "| plain: p99 no worse than nginx at the same load (%s req/s) | towergate %s ms, nginx %s ms | %s | %s |"
        % (RATE, fmt(p_t, 3), fmt(p_n, 3), fmt_ratio(rp), status(None if rp is None else rp <= 1.0))
    )
    # 10,000 routes
    ir_10k = per_req(run.instr.get("towergate-r10k", {}))
    r10 = ir_10k / ir_t if ir_10k and ir_t else None
    out.append(
        "| 10,000 routes: cost ≤ 1.5× one route (whole request, instructions) | %s vs %s | %s | %s |"
        % (fmt(ir_10k, 0), fmt(ir_t, 0), fmt_ratio(r10), status(None if r10 is None else r10 <= 1.5))
    )
    c10 = run.figure("routes10k", "wrk", "towergate", "cpu_us")
    c1 = run.figure("plain", "wrk", "towergate", "cpu_us")
    rc = c10 / c1 if c10 and c1 else None
    out.append(
        "| 10,000 routes: cost ≤ 1.5× one route (whole request, CPU time, wrk) | %s µs vs %s µs | %s | %s |"
        % (fmt(c10, 1), fmt(c1, 1), fmt_ratio(rc), status(None if rc is None else rc <= 1.5))
    )
    wrk = [(p, kv) for _, tool, p, kv in run.reload if tool == "wrk"]
    if wrk:
        e = sum(parse_wrk(read(p)).get("errors", 0) for p, _ in wrk)
        out.append("| reload of 10,000 routes under load: zero failed requests | %d failed | – | %s |" % (e, status(e == 0)))
    else:
        out.append("| reload of 10,000 routes under load: zero failed requests | not run | – | – |")
    mem = {p: (kv, t) for p, kv, t in run.memory}
    if "towergate" in mem:
        kv, text = mem["towergate"]
        idle, loaded = num(kv.get("rss_idle_kb")), num(kv.get("rss_loaded_kb"))
        m = re.search(r"ready (\d+) alive (\d+)", text)
        alive = int(m.group(2)) if m else None
        out.append(
            "| memory: < 20 MB RSS idle | %s MB | – | %s |"
            % (fmt(idle / 1024 if idle else None, 1), status(None if idle is None else idle / 1024 < 20))
        )
        per = (loaded - idle) / alive if alive and idle is not None and loaded is not None else None
        out.append(
            "| memory: < 40 KB per idle keep-alive connection | %s KB (%s connections) | – | %s |"
            % (fmt(per, 1), alive if alive is not None else "–", status(None if per is None else per < 40))
        )
    mrows = run.load.get(("mib", "mib"), [])
    m_t = run.figure("mib", "mib", "towergate", "cpu_us")
    m_n = run.figure("mib", "mib", "nginx", "cpu_us")
    rm = run.ratio(mrows, "towergate", "cpu_us") if mrows else None
    frows = run.load.get(("features", "wrk"), [])
    # JWT routes (token cached) against the plain route of the same process.
    for label, what in (("tg-jwt", "JWT RS256"), ("tg-es256", "JWT ES256, keys from a JWKS")):
        if not any(r["peer"] == label for r in frows):
            continue
        rj = run.ratio(frows, label, "cpu_us", "tg-plain")
        out.append(
            "| %s (token cached): CPU per request ≤ 1.5× plain towergate | %s µs vs %s µs | %s | %s |"
            % (
                what,
                fmt(run.figure("features", "wrk", label, "cpu_us"), 1),
                fmt(run.figure("features", "wrk", "tg-plain", "cpu_us"), 1),
                fmt_ratio(rj),
                status(None if rj is None else rj <= 1.5),
            )
        )
    s_es, s_pl = run.sys.get("tg-es256"), run.sys.get("tg-plain")
    if s_es and s_pl:
        a, b = sys_per_req(s_es)[0], sys_per_req(s_pl)[0]
        if a is not None and b is not None:
            # "No syscall per request": at most a tenth of one more than
            # the plain route (epoll_wait lands either side by that much).
            out.append(
                "| JWT ES256 from a JWKS: no syscall per request for keys (syscalls per request vs plain) "
                "| %s vs %s | %+.2f | %s |" % (fmt(a, 2), fmt(b, 2), a - b, status(a - b <= 0.1))
            )
    jrows = run.load.get(("jwks", "wrk"), [])
    if jrows:
        n = sum(r.get("requests") or 0 for r in jrows)
        e = sum(r.get("errors") or 0 for r in jrows)
        fetches = [kv for _, _, kv in run.extra.get(("jwks", "towergate", "fetches"), [])]
        out.append(
            "| JWKS key rotation under load: zero failed requests | %d failed of %d (JWKS fetches during the run: %s) | – | %s |"
            % (e, n, fetches[0].get("fetches", "–") if fetches else "–", status(n > 0 and e == 0))
        )
    scrapes = run.extra.get(("scrape", "towergate", "scrape"), [])
    if scrapes:
        ts = [num(kv.get("time_s")) for _, _, kv in scrapes]
        t = med(ts)
        kv = scrapes[0][2]
        out.append(
            "| metrics: a scrape with 10,000 routes' series ≤ 100 ms | %s ms (median of %d; %s routes with series, %s lines, %s bytes) | – | %s |"
            % (
                fmt(t * 1000 if t is not None else None, 1),
                len(ts),
                kv.get("routes", "–"),
                kv.get("lines", "–"),
                kv.get("bytes", "–"),
                status(None if t is None else t <= 0.1),
            )
        )
    rrows = run.load.get(("redis", "rate"), [])
    if rrows:
        p_r = run.figure("redis", "rate", "tg-redis", "p99")
        p_p = run.figure("redis", "rate", "tg-redis-plain", "p99")
        d = p_r - p_p if p_r is not None and p_p is not None else None
        out.append(
            "| rate limit in Redis: p99 ≤ plain p99 + 1 ms (%s req/s) | %s ms vs %s ms | %s | %s |"
            % (RATE, fmt(p_r, 3), fmt(p_p, 3), "–" if d is None else "%+.3f ms" % d, status(None if d is None else d <= 1.0))
        )
        cmds = redis_commands_per_decision(run)
        out.append(
            "| rate limit in Redis: one round trip per decision | %s commands sent to Redis per request | – | %s |"
            % (fmt(cmds, 3), status(None if cmds is None else cmds <= 1.001))
        )
        down = run.extra.get(("redis", "tg-redis-down", "outcome"), [])
        if down:
            r = parse_rate(read(down[0][1]))
            out.append(
                "| rate limit in Redis: Redis stopped under load, the local fallback, zero failed requests "
                "| %s failed of %s | – | %s |"
                % (r.get("errors", "–"), r.get("requests", "–"), status(bool(r.get("requests")) and r.get("errors") == 0))
            )
    ir_rl, ir_pl = per_req(run.instr.get("tg-rl", {})), per_req(run.instr.get("tg-plain", {}))
    if ir_rl and ir_pl:
        out.append(
            "| rate limit, in memory: instructions per request ≤ 1.1× plain towergate | %s vs %s | %s | %s |"
            % (fmt(ir_rl, 0), fmt(ir_pl, 0), fmt_ratio(ir_rl / ir_pl), status(ir_rl / ir_pl <= 1.1))
        )
    # A new key on every request: the limiter's cost is read against the
    # same request on the plain route (the key header is the client's, and
    # costs the same with or without a limit); the ratio to the plain
    # request without the header is shown beside it.
    ir_keys = per_req(run.instr.get("tg-rl-keys", {}))
    ir_plk = per_req(run.instr.get("tg-plain-keys", {}))
    rk = run.ratio(frows, "tg-rl-keys", "cpu_us", "tg-plain-keys") if frows else None
    if (ir_keys and ir_plk) or rk is not None:
        ir_ratio = ir_keys / ir_plk if ir_keys and ir_plk else None
        out.append(
            "| rate limit, a new key on every request: instructions per request ≤ 1.1× plain towergate "
            "(the same request) | %s vs %s (plain without the key header: %s, %s); CPU per request "
            "%s µs vs %s µs (%s, wrk) | %s | %s |"
            % (
                fmt(ir_keys, 0),
                fmt(ir_plk, 0),
                fmt(ir_pl, 0),
                fmt_ratio(ir_keys / ir_pl if ir_keys and ir_pl else None),
                fmt(run.figure("features", "wrk", "tg-rl-keys", "cpu_us"), 1),
                fmt(run.figure("features", "wrk", "tg-plain-keys", "cpu_us"), 1),
                fmt_ratio(rk),
                fmt_ratio(ir_ratio),
                status(None if ir_ratio is None else ir_ratio <= 1.1),
            )
        )
    # Observation cost. Requests/s on vs off only measure it when the proxy
    # saturates its core, which a shared machine does not guarantee: the
    # status is read from CPU time per request (what one saturated core's
    # requests/s is the inverse of), requests/s are shown beside it.
    orows = run.load.get(("observe", "wrk"), [])
    if orows:
        rc = run.ratio(orows, "tg-obs-on", "cpu_us", "tg-obs-off")
        ro = run.ratio(orows, "tg-obs-on", "rps", "tg-obs-off")
        out.append(
            "| observe on (metrics, access log, 1 %% tracing) costs < 10 %%: CPU per request on vs off "
            "| %s µs vs %s µs (req/s %s, proxy busy %s %% vs %s %%) | %s | %s |"
            % (
                fmt(run.figure("observe", "wrk", "tg-obs-on", "cpu_us"), 1),
                fmt(run.figure("observe", "wrk", "tg-obs-off", "cpu_us"), 1),
                fmt_ratio(ro),
                fmt(run.figure("observe", "wrk", "tg-obs-on", "busy"), 0),
                fmt(run.figure("observe", "wrk", "tg-obs-off", "busy"), 0),
                fmt_ratio(rc),
                status(None if rc is None else rc <= 1.1),
            )
        )
        # What nginx pays for its access log alone, in the same rounds: the
        # yardstick for the goal above (no goal of its own).
        rn = run.ratio(orows, "nginx-log", "cpu_us", "nginx")
        if rn is not None:
            out.append(
                "| reference: nginx's own JSON access log, CPU per request on vs off "
                "| %s µs vs %s µs | %s | (no goal) |"
                % (
                    fmt(run.figure("observe", "wrk", "nginx-log", "cpu_us"), 1),
                    fmt(run.figure("observe", "wrk", "nginx", "cpu_us"), 1),
                    fmt_ratio(rn),
                )
            )
    cpu_goal_row("accesslog", "tg-obs-log", "tg-plain", 1.1,
                 "access log (JSON, file) alone: CPU per request ≤ 1.1× plain towergate")
    cpu_goal_row("metrics", "tg-metrics", "tg-obs-off", 1.05,
                 "metrics alone: CPU per request, on vs observability off")
    ir_on, ir_off = per_req(run.instr.get("tg-obs-on", {})), per_req(run.instr.get("tg-obs-off", {}))
    ir_met = per_req(run.instr.get("tg-metrics", {}))
    if ir_met and ir_off:
        out.append(
            "| metrics alone ≤ 1.05×: instructions per request, on vs observability off | %s vs %s | %s | %s |"
            % (fmt(ir_met, 0), fmt(ir_off, 0), fmt_ratio(ir_met / ir_off), status(ir_met / ir_off <= 1.05))
        )
    if ir_on and ir_off:
        out.append(
            "| observe on costs < 10 %%: instructions per request on vs off | %s vs %s | %s | %s |"
            % (fmt(ir_on, 0), fmt(ir_off, 0), fmt_ratio(ir_on / ir_off), status(ir_on / ir_off <= 1.1))
        )
    out.append(
        "| 1 MiB responses: proxy CPU per MiB ≤ nginx | towergate %s ms, nginx %s ms | %s | %s |"
        % (
            fmt(m_t / 1000 if m_t else None, 2),
            fmt(m_n / 1000 if m_n else None, 2),
            fmt_ratio(rm),
            status(None if rm is None else rm <= 1.0),
        )
    )
    out.append("")


def redis_commands_per_decision(run):
    """Redis commands over the Redis-limited runs, per request sent."""
    sent = {r["round"]: r.get("requests") for r in run.load.get(("redis", "rate"), []) if r["peer"] == "tg-redis"}
    cmds = n = 0
    for rnd, _, kv in run.extra.get(("redis", "tg-redis", "commands"), []):
        c = num(kv.get("commands"))
        if c is not None and sent.get(rnd):
            cmds, n = cmds + c, n + sent[rnd]
    return cmds / n if n else None


def redis_table(run, out):
    rows = run.load.get(("redis", "rate"), [])
    if not rows:
        return
    nrounds = len({r["round"] for r in rows})
    out.append("### Rate limiting with its buckets in Redis (bench-client, %s requests/s)\n" % RATE)
    out.append("| route | requests, all rounds | failed | p50 ms | p90 ms | p99 ms | p99.9 ms | proxy CPU µs/req |")
    out.append("|---|---|---|---|---|---|---|---|")
    names = {"tg-redis-plain": "`/api/s0/`, no limit", "tg-redis": "`/rlredis/`, limit in Redis"}
    for peer in ("tg-redis-plain", "tg-redis"):
        pr = [r for r in rows if r["peer"] == peer]
        if not pr:
            continue
        out.append(
            "| %s | %d | %d | %s | %s | %s | %s | %s |"
            % (
                names[peer],
                sum(r.get("requests") or 0 for r in pr),
                sum(r.get("errors") or 0 for r in pr),
                fmt(med([r.get("p50") for r in pr]), 3),
                fmt(med([r.get("p90") for r in pr]), 3),
                fmt(med([r.get("p99") for r in pr]), 3),
                fmt(med([r.get("p999") for r in pr]), 3),
                fmt(med([r.get("cpu_us") for r in pr]), 1),
            )
        )
    out.append("")
    cmds = redis_commands_per_decision(run)
    lines = [
        "%d round(s), the two routes of one process interleaved; medians over rounds. Redis "
        "(our own `redis-server`) runs on the load CPU. Commands sent to Redis per request on the "
        "limited route (its `INFO commandstats`, less the `TIME`, `GET` and `SET` the script runs "
        "inside its one `EVALSHA`): %s." % (nrounds, fmt(cmds, 3))
    ]
    for label, what in (("tg-redis-down", "Redis stopped a third into a run"), ("tg-redis-back", "Redis started again")):
        for _, path, kv in run.extra.get(("redis", label, "outcome"), []):
            r = parse_rate(read(path))
            extra = ""
            if "commands" in kv:
                extra = ", Redis commands during it %s" % kv["commands"]
            lines.append(
                "%s: %s requests, %s failed, p99 %s ms%s."
                % (what, r.get("requests", "–"), r.get("errors", "–"), fmt(r.get("p99"), 3), extra)
            )
    out.append(" ".join(lines))
    out.append("")


def jwks_table(run, out):
    rows = run.load.get(("jwks", "wrk"), [])
    if not rows:
        return
    out.append("### JWT ES256 from a JWKS, keys rotated under load (wrk)\n")
    out.append("| client | requests | req/s | failed | p50 ms | p99 ms |")
    out.append("|---|---|---|---|---|---|")
    names = {"key-a": "tokens of key `a` (published from the start, withdrawn at the end)",
             "key-b": "tokens of key `b` (published during the run)"}
    for peer in ("key-a", "key-b"):
        for r in [r for r in rows if r["peer"] == peer]:
            out.append(
                "| %s | %s | %s | %d | %s | %s |"
                % (names[peer], r.get("requests", "–"), fmt(r.get("rps"), 0), r.get("errors") or 0,
                   fmt(r.get("p50"), 2), fmt(r.get("p99"), 2))
            )
    fetches = run.extra.get(("jwks", "towergate", "fetches"), [])
    kv = fetches[0][2] if fetches else {}
    out.append("")
    out.append(
        "Half the connections each. Key `a`'s client runs alone for %s s; the JWKS then publishes "
        "`a` and `b`, and key `b`'s client starts (a `kid` the gateway has not seen: one refetch); "
        "when `a`'s client ends the JWKS keeps `b` alone (seen at the gateway's next scheduled "
        "refresh). JWKS fetches from the upstream during the run: %s (before it: %s)."
        % (kv.get("publish_after_s", "–"), kv.get("fetches", "–"), kv.get("warm_fetches", "–"))
    )
    out.append("")


CONNS = os.environ.get("CONNS", "50")
RATE = os.environ.get("RATE", "5000")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    raw = sys.argv[1]
    run = Run(raw)
    machine = read(os.path.join(raw, "machine.txt"))
    m = re.search(r"^settings: (.*)$", machine, re.M)
    given = kv_of(m.group(1).split()) if m else {}
    global CONNS, RATE
    CONNS, RATE = given.get("CONNS", CONNS), given.get("RATE", RATE)
    settings = {
        "conns": CONNS,
        "rate": RATE,
        "mib_conns": given.get("MIB_CONNS", "10"),
        "h2": "%s connections × %s streams" % (given.get("H2_CONNS", "10"), given.get("H2_STREAMS", "10")),
    }
    out = []
    out.append("## Results: %s\n" % (re.search(r"date: (.*)", machine).group(1) if "date:" in machine else os.path.basename(raw)))
    for line in machine.splitlines():
        if line.startswith(("commit:", "nproc:", "kernel:", "settings:", "versions:")):
            out.append("- " + line)
    m = re.search(r"Model name:\s+(.*)", machine)
    if m:
        out.append("- cpu: " + m.group(1).strip())
    out.append("")
    goals(run, out)
    for key in [
        ("plain", "wrk"),
        ("plain", "rate"),
        ("routes100", "wrk"),
        ("routes10k", "wrk"),
        ("tls", "tls"),
        ("mib", "mib"),
        ("h2", "h2"),
    ]:
        load_table(run, key[0], key[1], out, settings)
    for scenario in VARIANTS:
        variant_table(run, scenario, out, settings)
    redis_table(run, out)
    jwks_table(run, out)
    memory_table(run, out)
    reload_table(run, out)
    instr_table(run, out)
    variant_instr_table(run, out)
    if run.notes:
        out.append("### Notes\n")
        out.extend("- " + n for n in run.notes)
        out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
