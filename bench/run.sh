#!/usr/bin/env bash
# towergate benchmarks: towergate against nginx, HAProxy, a bare hyper proxy
# (the floor) and the upstream alone (the limit), on one machine, loopback
# only. Method and latest figures: docs/benchmarks.md.
#
#   bench/run.sh                       # defaults: about 15 minutes
#   ROUNDS=5 DURATION=10 bench/run.sh  # steadier figures
#   SCENARIOS="plain mib" bench/run.sh # a subset
#
# It installs what is missing (apt-get: nginx haproxy wrk nghttp2-client
# openssl; never starting the distro services), builds the binaries (profile
# PROFILE, default dist),
# runs the scenarios with the proxy under test pinned alone on PROXY_CPU and
# the load generator + upstream on LOAD_CPU, every proxy limited to one
# worker, peers interleaved in rounds; then prints the markdown tables and
# writes them to bench/results/latest.md. Raw outputs stay in
# bench/results/raw/<date>/ (not committed).
#
# Settings (environment):
#   ROUNDS=3          rounds; each round runs every peer once, in turn
#   DURATION=5        seconds per load run
#   CONNS=50          client connections (wrk, bench-client --rate)
#   RATE=5000         requests/s of the fixed-rate latency run (plain)
#   MIB_CONNS=10      connections for the 1 MiB responses
#   H2_CONNS=10 H2_STREAMS=10   h2load connections and streams per connection
#   IDLE_CONNS=10000 IDLE_HOLD=5   idle keep-alive connections, seconds held
#   RELOADS=3         reloads under load (10,000 routes)
#   SCENARIOS="plain routes100 routes10k tls mib h2 memory reload scrape
#             features observe accesslog metrics cache redis jwks instructions";
#             accesslog: the JSON access log alone on plain towergate; metrics:
#             the metrics alone (no request ids) against observability off; scrape: the
#             time of a /metrics scrape with 10,000 routes' series;
#             features, observe and cache run
#             towergate variants against its own plain route, with nginx in
#             every round (observe: also nginx with a JSON access log, what
#             nginx pays for its log). redis: the rate limit with its
#             buckets in Redis (latency at RATE, commands per decision,
#             Redis stopped under load); jwks: ES256 keys from a JWKS,
#             rotated under load. Not in the default (about 3 more minutes):
#             instructions-variants, the variants' instruction counts, e.g.
#             SCENARIOS="plain features observe cache instructions-variants"
#   VIPEERS="tg-plain tg-jwt ..."   the labels of instructions-variants
#             (default: all of `variant` in lib.sh)
#   PEERS="direct nginx haproxy bare towergate"   restrict the peers
#   PROXY_CPU=0 LOAD_CPU=1   CPUs for the proxy / for load and upstream
#   BUILD=1 INSTALL=1        0 to skip the build / the apt-get installs
#   PROFILE=dist             the cargo profile built and measured (dist: fat
#                            LTO, the production build; release: quicker)
#   BIN=target/$PROFILE      where the binaries are (with BUILD=0: copies
#                            set aside while others build in the tree)
#   KEEP_WORK=0              1 keeps the temp dir (configs, certificates, logs)
#   N1=1000 N2=3000          request counts of instructions.sh
set -euo pipefail

: "${ROUNDS:=3}" "${DURATION:=5}" "${CONNS:=50}" "${RATE:=5000}"
: "${MIB_CONNS:=10}" "${H2_CONNS:=10}" "${H2_STREAMS:=10}"
: "${IDLE_CONNS:=10000}" "${IDLE_HOLD:=5}" "${RELOADS:=3}"
: "${SCENARIOS:=plain routes100 routes10k tls mib h2 memory reload scrape features observe accesslog metrics cache redis jwks instructions}"
: "${PEERS:=direct nginx haproxy bare towergate}"

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap 'cleanup; finish_workdir' EXIT
trap 'exit 130' INT TERM

# 10,000 idle connections need as many descriptors in the client and the proxy.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

install_tools nginx:nginx haproxy:haproxy wrk:wrk h2load:nghttp2-client openssl:openssl \
    taskset:util-linux python3:python3 redis-server:redis-server redis-cli:redis-tools curl:curl
command -v wrk >/dev/null || die "wrk is required"
build_binaries
make_workdir
RAW="$BENCH_DIR/results/raw/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$RAW"
INDEX="$RAW/index.tsv"
: >"$INDEX"
export RAW INDEX
log "raw outputs in $RAW, work dir $WORK"

{
    echo "date: $(date)"
    echo "nproc: $(nproc)"
    echo "kernel: $(uname -sr)"
    echo "commit: $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)$(cd "$ROOT" && git diff --quiet HEAD 2>/dev/null || echo ' (+ uncommitted changes)')"
    echo "settings: ROUNDS=$ROUNDS DURATION=$DURATION CONNS=$CONNS RATE=$RATE MIB_CONNS=$MIB_CONNS H2_CONNS=$H2_CONNS H2_STREAMS=$H2_STREAMS IDLE_CONNS=$IDLE_CONNS RELOADS=$RELOADS PROXY_CPU=$PROXY_CPU LOAD_CPU=$LOAD_CPU"
    echo "versions: $(nginx -v 2>&1 | sed 's/.*: //'); $(haproxy -v 2>/dev/null | head -1 | cut -d' ' -f1-3); $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2); $(h2load --version 2>/dev/null | head -1); $(rustc --version 2>/dev/null)"
    echo "--- lscpu"
    lscpu | head -20
    echo "--- free -h"
    free -h
} >"$RAW/machine.txt" 2>&1

TLS_OK=0
if make_certs; then TLS_OK=1; fi
configs 1
variant_configs
start_upstream

has_peer() { [[ " $PEERS " == *" $1 "* ]]; }
has_scenario() { [[ " $SCENARIOS " == *" $1 "* ]]; }
peers_of() { # the scenario's peers, less those not in PEERS
    local p out=()
    for p in "$@"; do has_peer "$p" && out+=("$p"); done
    echo "${out[@]}"
}

# One line per measured run: scenario, round, peer, tool, raw file, then
# key=value pairs. aggregate.py reads it with the raw files.
record() {
    local IFS=$'\t'
    echo "$*" >>"$INDEX"
}

# Runs the load tool of KIND against PEER once and records what it cost:
# the proxy's CPU ticks (all its processes), the upstream's, wall time, and
# how busy each of the two CPUs was. PORT and HEADER (wrk only) are for the
# towergate variants, whose label is not a peer.
measure() { # scenario round peer kind path pid [port [header [distinct-header]]]
    local scenario=$1 round=$2 peer=$3 kind=$4 path=$5 pid=$6
    local port=${7:-$(peer_port "$peer")} hdr=()
    [ -n "${8:-}" ] && hdr=(-H "$8")
    # A header with a new value on every request (bench/conf/distinct.lua).
    [ -n "${9:-}" ] && hdr+=(-s "$BENCH_DIR/conf/distinct.lua")
    local dist=${9:-}
    local out="$RAW/$scenario-$round-$peer.$kind"
    local cmd
    case $kind in
    wrk) cmd=(wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "${hdr[@]}" "http://127.0.0.1:$port$path") ;;
    tls) cmd=(wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "https://127.0.0.1:$(peer_tls_port "$peer")$path") ;;
    mib) cmd=(wrk -t1 -c"$MIB_CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:$(peer_port "$peer")$path") ;;
    rate) cmd=("$BIN/bench-client" --target "127.0.0.1:$port" --path "$path"
        --rate "$RATE" --duration "$DURATION" --connections "$CONNS") ;;
    h2) cmd=(h2load -t1 -c"$H2_CONNS" -m"$H2_STREAMS" -D"$DURATION"
        "http://127.0.0.1:$(peer_h2c_port "$peer")$path") ;;
    esac
    local t0 p0 u0 l0 lt0 c0 ct0 t1 p1 u1 l1 lt1 c1 ct1
    read -r l0 lt0 < <(cpu_jiffies "$LOAD_CPU")
    read -r c0 ct0 < <(cpu_jiffies "$PROXY_CPU")
    p0=$(cpu_ticks "$pid") u0=$(cpu_ticks "$UPSTREAM_PID") t0=$(now)
    DISTINCT_HEADER=$dist taskset -c "$LOAD_CPU" "${cmd[@]}" >"$out" 2>&1 || log "$scenario $peer: ${cmd[0]} failed (see $out)"
    t1=$(now) p1=$(cpu_ticks "$pid") u1=$(cpu_ticks "$UPSTREAM_PID")
    read -r l1 lt1 < <(cpu_jiffies "$LOAD_CPU")
    read -r c1 ct1 < <(cpu_jiffies "$PROXY_CPU")
    record "$scenario" "$round" "$peer" "$kind" "$out" \
        "proxy_ticks=$((p1 - p0))" "up_ticks=$((u1 - u0))" "clk_tck=$CLK_TCK" \
        "wall=$(elapsed "$t0" "$t1")" \
        "load_busy=$(((l1 - l0) * 100 / (lt1 - lt0 > 0 ? lt1 - lt0 : 1)))" \
        "proxy_core_busy=$(((c1 - c0) * 100 / (ct1 - ct0 > 0 ? ct1 - ct0 : 1)))"
}

# Starts PEERS with the ROUTES config, warms each up, then runs ROUNDS
# rounds of KIND(S), every peer once per round in turn, and stops them.
load_scenario() { # scenario routes path "kinds" peers...
    local scenario=$1 routes=$2 path=$3 kinds=$4
    shift 4
    local peers=() p k r
    declare -A pid=()
    for p in "$@"; do
        if start_peer "$p" "$routes"; then
            pid[$p]=$PEER_PID
            peers+=("$p")
        else
            record "$scenario" 0 "$p" failed - "note=did not start"
        fi
    done
    log "$scenario: ${peers[*]} (${ROUNDS}x ${DURATION}s, $kinds)"
    for p in "${peers[@]}"; do # warm-up: pools, page cache, branch predictors
        for k in $kinds; do
            case $k in
            h2) taskset -c "$LOAD_CPU" h2load -t1 -c2 -m2 -n 2000 "http://127.0.0.1:$(peer_h2c_port "$p")$path" >/dev/null 2>&1 || true ;;
            tls) taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d1s "https://127.0.0.1:$(peer_tls_port "$p")$path" >/dev/null 2>&1 || true ;;
            *) taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d1s "http://127.0.0.1:$(peer_port "$p")$path" >/dev/null 2>&1 || true ;;
            esac
        done
    done
    for r in $(seq 1 "$ROUNDS"); do
        for p in "${peers[@]}"; do
            for k in $kinds; do measure "$scenario" "$r" "$p" "$k" "$path" "${pid[$p]}"; done
        done
    done
    for p in "${peers[@]}"; do stop_peer "$p" "${pid[$p]}"; done
}

# Towergate variants (bench/lib.sh `variant`: one label = one config, one
# path, maybe a header) against each other and nginx on its plain route,
# wrk only. Labels of one config share one towergate process; every label
# runs once per round, in turn, as in load_scenario.
variant_scenario() { # scenario labels...
    local scenario=$1
    shift
    local labels=() l key r
    declare -A pid=() lpid=() lport=() lpath=() lhdr=() ldist=()
    for l in "$@"; do
        if [ "$l" = nginx ]; then
            has_peer nginx || continue
            key=nginx:1 lport[$l]=$PORT_NGINX lpath[$l]=/api/s0/x lhdr[$l]="" ldist[$l]=""
        elif [ "$l" = nginx-log ]; then # nginx with its JSON access log
            has_peer nginx || continue
            key=nginx-alt:log lport[$l]=$PORT_NGINX_ALT lpath[$l]=/api/s0/x lhdr[$l]="" ldist[$l]=""
        else
            variant "$l" || die "unknown variant $l"
            key=$V_PEER:$V_CONF lport[$l]=$(peer_port "$V_PEER") lpath[$l]=$V_PATH lhdr[$l]=$V_HDR
            ldist[$l]=$V_DISTINCT
        fi
        if [ -z "${pid[$key]:-}" ]; then
            if start_peer "${key%%:*}" "${key#*:}"; then pid[$key]=$PEER_PID; else pid[$key]=failed; fi
        fi
        if [ "${pid[$key]}" = failed ]; then
            record "$scenario" 0 "$l" failed - "note=did not start"
            continue
        fi
        lpid[$l]=${pid[$key]}
        labels+=("$l")
    done
    log "$scenario: ${labels[*]} (${ROUNDS}x ${DURATION}s, wrk)"
    for l in "${labels[@]}"; do
        local hdr=()
        [ -n "${lhdr[$l]}" ] && hdr=(-H "${lhdr[$l]}")
        [ -n "${ldist[$l]}" ] && hdr+=(-s "$BENCH_DIR/conf/distinct.lua")
        DISTINCT_HEADER=${ldist[$l]} taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d1s "${hdr[@]}" \
            "http://127.0.0.1:${lport[$l]}${lpath[$l]}" >/dev/null 2>&1 || true
    done
    for r in $(seq 1 "$ROUNDS"); do
        for l in "${labels[@]}"; do
            measure "$scenario" "$r" "$l" wrk "${lpath[$l]}" "${lpid[$l]}" "${lport[$l]}" "${lhdr[$l]}" "${ldist[$l]}"
        done
    done
    for key in "${!pid[@]}"; do
        [ "${pid[$key]}" = failed ] || stop_peer "${key%%:*}" "${pid[$key]}"
    done
    # Evidence that the access logs were written (lines, bytes).
    wc -lc "$WORK"/logs/access-*.jsonl >"$RAW/$scenario-access-logs.txt" 2>&1 || true
}

memory_scenario() {
    local p out ready i
    for p in $(peers_of nginx haproxy bare towergate); do
        start_peer "$p" 1 || continue
        local pid=$PEER_PID port
        port=$(peer_port "$p")
        taskset -c "$LOAD_CPU" "$BIN/bench-client" --target "127.0.0.1:$port" --path /api/s0/x \
            --requests 200 --connections 1 >/dev/null 2>&1 || true
        sleep 1
        local idle_kb loaded_kb n=$IDLE_CONNS
        # HAProxy refuses to start with a maxconn its descriptors cannot back.
        if [ "$p" = haproxy ] && ((n > HAPROXY_MAXCONN - 16)); then n=$((HAPROXY_MAXCONN - 16)); fi
        idle_kb=$(rss_kb "$pid")
        out="$RAW/memory-1-$p.idle"
        log "memory: $p, $n idle connections"
        taskset -c "$LOAD_CPU" "$BIN/bench-client" --target "127.0.0.1:$port" --path /api/s0/x \
            --idle "$n" --hold "$IDLE_HOLD" >"$out" 2>&1 &
        local cpid=$!
        STARTED_PIDS+=("$cpid")
        ready=0
        for i in $(seq 1 1200); do
            if grep -q '^ready' "$out"; then ready=1; break; fi
            kill -0 "$cpid" 2>/dev/null || break
            sleep 0.1
        done
        sleep 0.5
        loaded_kb=$(rss_kb "$pid")
        wait "$cpid" 2>/dev/null || true
        forget_pid "$cpid"
        record memory 1 "$p" mem "$out" "rss_idle_kb=$idle_kb" "rss_loaded_kb=$loaded_kb" \
            "conns=$n" "ready=$ready"
        stop_peer "$p" "$pid"
    done
}

reload_scenario() {
    has_peer towergate || return 0
    local k
    configs 10000
    for k in $(seq 1 "$RELOADS"); do configs 10000 --probe "probe$k"; done
    cp "$WORK/towergate-10000.yaml" "$WORK/towergate-live.yaml"
    # Compile time alone (load + validate + compile, no serving), 3 times.
    for k in 1 2 3; do
        local t0 t1
        t0=$(now)
        "$BIN/towergate" check --config "$WORK/towergate-10000.yaml" >/dev/null 2>&1 || log "check failed"
        t1=$(now)
        record reload "$k" towergate check - "check_s=$(elapsed "$t0" "$t1")"
    done
    start_peer towergate live || return 0
    local pid=$PEER_PID dur=$((RELOADS * 2 + 3))
    ((dur > DURATION)) || dur=$DURATION
    log "reload: $RELOADS reloads of 10,000 routes under ${dur}s of load"
    local out="$RAW/reload-1-towergate.wrk" p0 t0
    p0=$(cpu_ticks "$pid") t0=$(now)
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${dur}s" --latency \
        "http://127.0.0.1:$PORT_TOWERGATE/api/s9999/x" >"$out" 2>&1 &
    local wpid=$!
    STARTED_PIDS+=("$wpid")
    sleep 1.5
    for k in $(seq 1 "$RELOADS"); do
        # Replace the file as a deploy tool would (atomic rename), and send
        # SIGHUP at the same instant; the reloader's debounce makes one
        # reload of the two.
        cp "$WORK/towergate-10000-probe$k.yaml" "$WORK/towergate-live.yaml.new"
        mv "$WORK/towergate-live.yaml.new" "$WORK/towergate-live.yaml"
        taskset -c "$LOAD_CPU" "$BIN/bench-client" --target "127.0.0.1:$PORT_TOWERGATE" \
            --until-ok "/probe$k/x" --hup "$pid" --timeout 30 >"$RAW/reload-$k-towergate.probe" 2>&1 ||
            log "reload $k: probe failed"
        record reload "$k" towergate probe "$RAW/reload-$k-towergate.probe"
        sleep 1
    done
    wait "$wpid" 2>/dev/null || true
    forget_pid "$wpid"
    record reload 1 towergate wrk "$out" "proxy_ticks=$(($(cpu_ticks "$pid") - p0))" \
        "wall=$(elapsed "$t0" "$(now)")" "clk_tck=$CLK_TCK" \
        "reload_lines=$(grep -c 'configuration reloaded' "$WORK/towergate-live.log" || true)" \
        "rss_kb=$(rss_kb "$pid")"
    stop_peer towergate "$pid"
}

# Rate limiting with its buckets in Redis (our own redis-server, pinned with
# the load): the fixed-rate latency of the limited route against the plain
# route of the same process, interleaved, with the commands the gateway
# sent Redis counted over the limited runs (round trips: lib.sh
# redis_commands); then Redis stopped a third into a run (the limits
# fall back to local buckets: no request may fail), and started again (the
# decisions must go back to Redis).
redis_scenario() {
    has_peer towergate || return 0
    if ! command -v redis-cli >/dev/null 2>&1 || ! start_redis; then
        record redis 0 tg-redis skipped - "note=redis-server or redis-cli missing"
        return 0
    fi
    if ! start_peer towergate redis; then
        record redis 0 tg-redis failed - "note=did not start"
        stop_pid "$REDIS_PID"
        return 0
    fi
    local pid=$PEER_PID r c0 c1 out cpid
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d1s "http://127.0.0.1:$PORT_TOWERGATE/rlredis/x" \
        >/dev/null 2>&1 || true
    log "redis: plain and Redis-limited routes (${ROUNDS}x ${DURATION}s at $RATE req/s), then Redis stopped under load"
    for r in $(seq 1 "$ROUNDS"); do
        measure redis "$r" tg-redis-plain rate /api/s0/x "$pid" "$PORT_TOWERGATE"
        c0=$(redis_commands)
        measure redis "$r" tg-redis rate /rlredis/x "$pid" "$PORT_TOWERGATE"
        c1=$(redis_commands)
        record redis "$r" tg-redis commands - "commands=$((c1 - c0))"
    done
    # Redis stopped a third into the run.
    out="$RAW/redis-down-tg-redis.rate"
    taskset -c "$LOAD_CPU" "$BIN/bench-client" --target "127.0.0.1:$PORT_TOWERGATE" --path /rlredis/x \
        --rate "$RATE" --duration "$DURATION" --connections "$CONNS" >"$out" 2>&1 &
    cpid=$!
    sleep "$(awk -v d="$DURATION" 'BEGIN { print d / 3 }')"
    stop_pid "$REDIS_PID"
    wait "$cpid" || true
    record redis 1 tg-redis-down outcome "$out"
    # Started again: after the store's reconnect (connect_timeout, 1 s), the
    # decisions go back to Redis.
    start_redis || true
    sleep 2
    out="$RAW/redis-back-tg-redis.rate"
    c0=$(redis_commands)
    taskset -c "$LOAD_CPU" "$BIN/bench-client" --target "127.0.0.1:$PORT_TOWERGATE" --path /rlredis/x \
        --rate "$RATE" --duration 2 --connections "$CONNS" >"$out" 2>&1 || true
    c1=$(redis_commands)
    record redis 1 tg-redis-back outcome "$out" "commands=$((${c1:-0} - ${c0:-0}))"
    stop_peer towergate "$pid"
    stop_pid "$REDIS_PID"
}

# The metrics of 10,000 routes: wrk sends every request to the next route
# (conf/routes.lua), so that each has its series; then /metrics is scraped
# three times from the admin port, the load stopped (curl's total time).
scrape_scenario() {
    has_peer towergate || return 0
    if ! command -v curl >/dev/null 2>&1; then
        record scrape 0 towergate skipped - "note=curl missing"
        return 0
    fi
    configs 10000
    if ! start_peer towergate 10000; then
        record scrape 0 towergate failed - "note=did not start"
        return 0
    fi
    local pid=$PEER_PID k out t routes
    log "scrape: ${DURATION}s over the 10,000 routes, then 3 scrapes of /metrics"
    ROUTES=10000 taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$BENCH_DIR/conf/routes.lua" \
        "http://127.0.0.1:$PORT_TOWERGATE" >"$RAW/scrape-1-towergate.load" 2>&1 || true
    record scrape 1 towergate load "$RAW/scrape-1-towergate.load"
    for k in 1 2 3; do
        out="$RAW/scrape-$k-towergate.metrics"
        t=$(taskset -c "$LOAD_CPU" curl -s -o "$out" -w '%{time_total} %{size_download}' \
            "http://127.0.0.1:$PORT_TOWERGATE_ADMIN/metrics") || t="- -"
        routes=$(grep '^towergate_http_requests_total{' "$out" 2>/dev/null | grep -o 'route="[^"]*"' |
            sort -u | wc -l)
        record scrape "$k" towergate scrape "$out" "time_s=${t% *}" "bytes=${t#* }" \
            "lines=$(wc -l <"$out" 2>/dev/null || echo 0)" "routes=$routes"
    done
    stop_peer towergate "$pid"
}

# JWT ES256 with its keys from the upstream's JWKS, rotated under load: wrk
# sends tokens of key a; after P seconds the JWKS publishes a and b, and a
# second wrk sends tokens of key b (a kid the gateway has not seen: one
# refetch) for 2 × DURATION; when the first ends, D seconds later, the JWKS
# keeps b alone. No request of either may fail. P is at least 12 s: the
# gateway refetches for an unknown kid at most once per 10 s (its refetch
# floor; a token whose kid arrives sooner is refused, as it would be by an
# identity provider's client library under its rate limit), and an
# identity provider publishes a key before it signs with it. The JWKS
# fetches come from the upstream's log.
jwks_scenario() {
    has_peer towergate || return 0
    publish_jwks a
    if ! start_peer towergate features; then
        record jwks 0 towergate failed - "note=did not start"
        return 0
    fi
    local pid=$PEER_PID url="http://127.0.0.1:$PORT_TOWERGATE/jwks/x" f0 f1 wa wb
    local half=$((CONNS / 2 > 0 ? CONNS / 2 : 1)) p=$((DURATION > 12 ? DURATION : 12))
    local ha="Authorization: Bearer $(cat "$WORK/es256-a.txt")"
    local hb="Authorization: Bearer $(cat "$WORK/es256-b.txt")"
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d1s -H "$ha" "$url" >/dev/null 2>&1 || true
    f0=$(grep -c '^jwks fetch' "$WORK/upstream.log" || true)
    log "jwks: key a for $((p + DURATION))s; after ${p}s keys a and b, and key b's tokens for $((2 * DURATION))s; then b alone"
    taskset -c "$LOAD_CPU" wrk -t1 -c"$half" -d"$((p + DURATION))s" --latency -H "$ha" "$url" \
        >"$RAW/jwks-1-key-a.wrk" 2>&1 &
    wa=$!
    sleep "$p"
    publish_jwks a b
    taskset -c "$LOAD_CPU" wrk -t1 -c"$half" -d"$((2 * DURATION))s" --latency -H "$hb" "$url" \
        >"$RAW/jwks-1-key-b.wrk" 2>&1 &
    wb=$!
    wait "$wa" || true
    publish_jwks b
    wait "$wb" || true
    f1=$(grep -c '^jwks fetch' "$WORK/upstream.log" || true)
    record jwks 1 key-a wrk "$RAW/jwks-1-key-a.wrk"
    record jwks 1 key-b wrk "$RAW/jwks-1-key-b.wrk"
    record jwks 1 towergate fetches - "fetches=$((f1 - f0))" "warm_fetches=$f0" "publish_after_s=$p"
    stop_peer towergate "$pid"
    publish_jwks a
}

for s in $SCENARIOS; do
    case $s in
    plain) load_scenario plain 1 /api/s0/x "wrk rate" $(peers_of direct nginx haproxy bare towergate) ;;
    routes100)
        configs 100
        load_scenario routes100 100 /api/s99/x wrk $(peers_of nginx haproxy towergate)
        ;;
    routes10k)
        configs 10000
        load_scenario routes10k 10000 /api/s9999/x wrk $(peers_of nginx haproxy towergate)
        ;;
    tls)
        if [ "$TLS_OK" = 1 ]; then
            load_scenario tls 1 /api/s0/x tls $(peers_of nginx haproxy towergate)
        else
            record tls 0 all skipped - "note=openssl missing: no certificates"
        fi
        ;;
    mib) load_scenario mib 1 /api/s0/1mib mib $(peers_of direct nginx haproxy bare towergate) ;;
    h2)
        if command -v h2load >/dev/null; then
            load_scenario h2 1 /api/s0/x h2 $(peers_of nginx haproxy bare towergate)
        else
            record h2 0 all skipped - "note=h2load (nghttp2-client) not installable"
        fi
        ;;
    memory) memory_scenario ;;
    reload) reload_scenario ;;
    features) variant_scenario features nginx tg-plain tg-jwt tg-es256 tg-rl tg-full tg-plain-keys tg-rl-keys ;;
    observe) variant_scenario observe nginx nginx-log tg-obs-off tg-obs-on ;;
    cache) variant_scenario cache nginx tg-nocache tg-cached ;;
    accesslog) variant_scenario accesslog nginx tg-plain tg-obs-log ;;
    metrics) variant_scenario metrics nginx tg-obs-off tg-metrics ;;
    scrape) scrape_scenario ;;
    redis) redis_scenario ;;
    jwks) jwks_scenario ;;
    instructions | instructions-variants)
        ipeers=${IPEERS:-}
        [ "$s" = instructions-variants ] &&
            ipeers="${VIPEERS:-tg-plain tg-plain-keys tg-jwt tg-es256 tg-rl tg-rl-keys tg-redis tg-full tg-obs-off tg-obs-on tg-obs-log tg-obs-trace tg-metrics tg-nocache tg-cached}"
        stop_pid "$UPSTREAM_PID"
        wait_port_free "$PORT_UP" || true
        BUILD=0 INSTALL="$INSTALL" RAW="$RAW" INDEX="$INDEX" IPEERS="$ipeers" "$BENCH_DIR/instructions.sh" ||
            log "instructions.sh failed"
        start_upstream
        ;;
    *) log "unknown scenario $s" ;;
    esac
done

python3 "$BENCH_DIR/aggregate.py" "$RAW" >"$RAW/tables.md"
cp "$RAW/tables.md" "$BENCH_DIR/results/latest.md"
cat "$RAW/tables.md"
log "written: bench/results/latest.md (raw: $RAW)"
