# Shared by bench/run.sh and bench/instructions.sh (sourced, not run).
#
# Ports, the work directory, installing the peers, starting and stopping
# them pinned to their CPU, and reading their CPU time and memory from
# /proc. Every process started here is recorded by pid and stopped by pid.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
# The binaries under test. BIN=DIR (with BUILD=0) runs copies set aside,
# e.g. built from a snapshot while others keep building in this tree.
# PROFILE: the cargo profile they are built with: `dist` (fat LTO), the
# production build; `release` builds in half the time.
: "${PROFILE:=dist}"
case $PROFILE in
dev | test) PROFILE_DIR=debug ;;
bench) PROFILE_DIR=release ;;
*) PROFILE_DIR=$PROFILE ;;
esac
: "${BIN:=$ROOT/target/$PROFILE_DIR}"

: "${PROXY_CPU:=0}"      # the proxy under test, alone
: "${LOAD_CPU:=1}"       # load generator and upstream
: "${BUILD:=1}"          # 0: use the binaries already in $BIN
: "${INSTALL:=1}"        # 0: do not apt-get install missing tools

export PORT_UP=19000
export PORT_NGINX=19001 PORT_HAPROXY=19002 PORT_BARE=19003 PORT_TOWERGATE=19004
export PORT_TOWERGATE_ADMIN=19005
# A second towergate beside the first (features, observe): its own config.
export PORT_TOWERGATE_ALT=19006 PORT_TOWERGATE_ALT_ADMIN=19007
# A second nginx (observe: nginx with its access log).
export PORT_NGINX_ALT=19008 PORT_NGINX_ALT_TLS=19018 PORT_NGINX_ALT_H2C=19028
export PORT_NGINX_TLS=19011 PORT_HAPROXY_TLS=19012 PORT_TOWERGATE_TLS=19014
# nginx cannot speak h2c and HTTP/1.1 on one plain port; the others can.
export PORT_NGINX_H2C=19021 PORT_HAPROXY_H2C=19022
# Our own Redis (the redis scenario and the tg-redis variant), beside any
# Redis the machine runs.
export PORT_REDIS=19009

CLK_TCK=$(getconf CLK_TCK)
# HAProxy needs two descriptors per connection (client and server side):
# its maxconn must fit the hard open-files limit.
HARD_NOFILE=$(ulimit -Hn)
[ "$HARD_NOFILE" = unlimited ] && HARD_NOFILE=1048576
HAPROXY_MAXCONN=$(((HARD_NOFILE - 64) / 2))
((HAPROXY_MAXCONN <= 10100)) || HAPROXY_MAXCONN=10100
export HAPROXY_MAXCONN
STARTED_PIDS=()

log() { echo "[bench $(date +%T)] $*" >&2; }
die() { log "error: $*"; exit 1; }

# --- tools -------------------------------------------------------------------

# apt-get installs what is missing. The distro's nginx and haproxy services
# are never started: a policy-rc.d that refuses service starts is in place
# for the install (unless one already is), and on a systemd machine the
# units we installed are stopped and disabled. Our own instances run with
# their own config, pid and temp files under the work directory.
install_tools() {
    local want=() cmd pkg
    for cmd_pkg in "$@"; do
        cmd=${cmd_pkg%%:*} pkg=${cmd_pkg#*:}
        command -v "$cmd" >/dev/null 2>&1 || want+=("$pkg")
    done
    ((${#want[@]})) || return 0
    if [ "$INSTALL" != 1 ]; then
        log "missing (INSTALL=0, not installing): ${want[*]}"
        return 0
    fi
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# towergate bench: no service starts during install\nexit 101\n' |
            $sudo tee "$policy" >/dev/null
        $sudo chmod 755 "$policy"
        made_policy=1
    fi
    log "installing: ${want[*]}"
    $sudo apt-get update -qq >/dev/null || log "apt-get update failed"
    for pkg in "${want[@]}"; do
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$pkg" >/dev/null 2>&1 ||
            log "could not install $pkg (its scenarios will say so)"
    done
    if [ "$made_policy" = 1 ]; then $sudo rm -f "$policy"; fi
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        for pkg in "${want[@]}"; do
            case $pkg in nginx | haproxy)
                $sudo systemctl disable --now "$pkg" >/dev/null 2>&1 || true ;;
            esac
        done
    fi
}

build_binaries() {
    if [ "$BUILD" = 1 ]; then
        [ "$(realpath -m "$BIN")" = "$(realpath -m "$ROOT/target/$PROFILE_DIR")" ] ||
            log "warning: building profile $PROFILE into target/$PROFILE_DIR, but running the binaries in BIN=$BIN"
        log "cargo build --profile $PROFILE -p towergate -p towergate-bench"
        (cd "$ROOT" && cargo build --profile "$PROFILE" -q -p towergate -p towergate-bench) ||
            die "build failed"
    fi
    for b in towergate bench-upstream bare-proxy bench-client jwt-token; do
        [ -x "$BIN/$b" ] || die "$BIN/$b missing (run with BUILD=1)"
    done
}

# --- work directory ----------------------------------------------------------

make_workdir() {
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/towergate-bench.XXXXXX")
    mkdir -p "$WORK/nginx"/{body,proxy,fastcgi,uwsgi,scgi} "$WORK/haproxy"
    export WORK
}

# At exit: the peers' logs go to RAW/logs (when there is a RAW), then the
# work directory is removed (KEEP_WORK=1 keeps it).
finish_workdir() {
    [ -n "${WORK:-}" ] && [ -d "$WORK" ] || return 0
    if [ -n "${RAW:-}" ] && [ -d "$RAW" ]; then
        mkdir -p "$RAW/logs"
        cp "$WORK"/*.log "$RAW/logs/" 2>/dev/null || true
        cp "$WORK/nginx/error.log" "$RAW/logs/nginx-error.log" 2>/dev/null || true
    fi
    [ "${KEEP_WORK:-0}" = 1 ] || rm -rf "$WORK"
}

# A self-signed P-256 certificate for localhost (PKCS#8 key), and the
# cert+key bundle HAProxy wants.
make_certs() {
    if ! command -v openssl >/dev/null 2>&1; then
        log "openssl missing: no TLS scenario"
        return 1
    fi
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$WORK/key.pem" -out "$WORK/cert.pem" -days 2 -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >/dev/null 2>&1 ||
        return 1
    cat "$WORK/cert.pem" "$WORK/key.pem" >"$WORK/cert+key.pem"
}

# Writes the peers' configs for ROUTES routes (see genconf.py); without a
# certificate their TLS listeners are left out.
configs() { # ROUTES [--probe NAME]
    python3 "$BENCH_DIR/genconf.py" "$WORK" "$@" || die "genconf failed"
}

# The RS256 key pair and token of the JWT routes (bench/src/bin/jwt_token.rs):
# WORK/jwt-public.pem, WORK/jwt-token.txt; two ES256 keys, `a` and `b`, as
# JWKs (WORK/jwk-a.json, jwk-b.json) with a token each (es256-a.txt,
# es256-b.txt), and the JWKS the upstream serves (WORK/jwks.json: key a,
# see `publish_jwks`); then the variant configs.
variant_configs() {
    "$BIN/jwt-token" --public-key "$WORK/jwt-public.pem" >"$WORK/jwt-token.txt" ||
        die "jwt-token failed"
    local k
    for k in a b; do
        "$BIN/jwt-token" --alg ES256 --kid "$k" --jwk "$WORK/jwk-$k.json" >"$WORK/es256-$k.txt" ||
            die "jwt-token --alg ES256 failed"
    done
    publish_jwks a
    python3 "$BENCH_DIR/genconf.py" "$WORK" variants || die "genconf variants failed"
}

# The towergate variants of the features, observe and cache scenarios: one
# label each, for run.sh and instructions.sh. Sets V_PEER (what start_peer
# starts), V_CONF (its config: towergate-V_CONF.yaml), V_PATH (the request)
# and V_HDR (a request header, or empty); V_DISTINCT names a header that
# gets a new value on every request (bench-client --distinct-header in
# instructions.sh, wrk with conf/distinct.lua in run.sh).
variant() {
    V_PEER=towergate V_HDR="" V_PATH=/api/s0/x V_DISTINCT=""
    case $1 in
    tg-plain) V_CONF=features ;;
    tg-jwt) V_CONF=features V_PATH=/jwt/x V_HDR="Authorization: Bearer $(cat "$WORK/jwt-token.txt")" ;;
    tg-rl) V_CONF=features V_PATH=/rl/x ;;
    tg-rl-keys) V_CONF=features V_PATH=/rlkeys/x V_DISTINCT=x-api-key ;; # a new key every request
    # tg-rl-keys's request on the plain route: what the header costs alone
    tg-plain-keys) V_CONF=features V_DISTINCT=x-api-key ;;
    tg-full) V_PEER=towergate-alt V_CONF=features-log V_PATH=/full/x
        V_HDR="Authorization: Bearer $(cat "$WORK/jwt-token.txt")" ;;
    tg-obs-off) V_CONF=obs-off ;;
    tg-obs-on) V_PEER=towergate-alt V_CONF=obs-on ;;
    tg-obs-log) V_PEER=towergate-alt V_CONF=obs-log ;;
    tg-obs-trace) V_CONF=obs-trace ;;
    # observability on without request ids: what the metrics cost alone
    tg-metrics) V_PEER=towergate-alt V_CONF=obs-metrics ;;
    tg-nocache) V_CONF=cache ;;
    tg-cached) V_CONF=cache V_PATH=/cached/x ;;
    # ES256, the key from the upstream's JWKS (cached after the first fetch)
    tg-es256) V_CONF=features V_PATH=/jwks/x V_HDR="Authorization: Bearer $(cat "$WORK/es256-a.txt")" ;;
    # the rate limit's buckets in Redis (start_redis first)
    tg-redis) V_CONF=redis V_PATH=/rlredis/x ;;
    *) return 1 ;;
    esac
}
is_variant() { [[ $1 == tg-* ]]; }

# --- processes ---------------------------------------------------------------

# Waits until something accepts on PORT (WAIT_PORT_S seconds, default 10).
wait_port() {
    local port=$1 i
    for i in $(seq 1 $((${WAIT_PORT_S:-10} * 20))); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    return 1
}

# Waits until nothing accepts on PORT any more (5 s).
wait_port_free() {
    local port=$1 i
    for i in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || return 0
        sleep 0.05
    done
    return 1
}

# The JWKS the upstream serves: the JWKs of KEYS (a, b: see variant_configs),
# replaced at once as an identity provider's would be.
publish_jwks() { # keys...
    local k sep="" body='{"keys":['
    for k in "$@"; do
        body+="$sep$(cat "$WORK/jwk-$k.json")" sep=,
    done
    printf '%s]}\n' "$body" >"$WORK/jwks.json.tmp" && mv "$WORK/jwks.json.tmp" "$WORK/jwks.json"
}

start_upstream() {
    taskset -c "$LOAD_CPU" "$BIN/bench-upstream" --listen "127.0.0.1:$PORT_UP" --threads 1 \
        --jwks "$WORK/jwks.json" >"$WORK/upstream.log" 2>&1 &
    UPSTREAM_PID=$!
    STARTED_PIDS+=("$UPSTREAM_PID")
    wait_port "$PORT_UP" || die "upstream did not start"
}

# Our own Redis on PORT_REDIS, pinned with the load (nothing kept on disk);
# sets REDIS_PID. Returns 1 when redis-server is missing.
start_redis() {
    command -v redis-server >/dev/null 2>&1 || { log "redis-server missing"; return 1; }
    mkdir -p "$WORK/redis"
    taskset -c "$LOAD_CPU" redis-server --port "$PORT_REDIS" --bind 127.0.0.1 --save "" \
        --appendonly no --dir "$WORK/redis" >"$WORK/redis.log" 2>&1 &
    REDIS_PID=$!
    STARTED_PIDS+=("$REDIS_PID")
    wait_port "$PORT_REDIS" || { log "redis-server did not start"; return 1; }
}

# Commands clients have sent Redis so far (`INFO commandstats`), less those
# a script runs inside its one EVALSHA (TIME, GET, SET) and our own INFO:
# the round trips made to it.
redis_commands() {
    redis-cli -p "$PORT_REDIS" info commandstats 2>/dev/null | tr -d '\r' |
        awk -F'[:,=]' '/^cmdstat_/ && $1 !~ /^cmdstat_(time|get|set|info)$/ { s += $3 } END { print s + 0 }'
}

# The plain HTTP/1.1 port of a peer ("direct" is the upstream itself).
peer_port() {
    case $1 in
    direct) echo "$PORT_UP" ;;
    nginx) echo "$PORT_NGINX" ;;
    nginx-alt) echo "$PORT_NGINX_ALT" ;;
    haproxy) echo "$PORT_HAPROXY" ;;
    bare*) echo "$PORT_BARE" ;;
    towergate-alt) echo "$PORT_TOWERGATE_ALT" ;;
    towergate*) echo "$PORT_TOWERGATE" ;;
    esac
}
peer_tls_port() {
    case $1 in
    nginx) echo "$PORT_NGINX_TLS" ;;
    haproxy) echo "$PORT_HAPROXY_TLS" ;;
    towergate*) echo "$PORT_TOWERGATE_TLS" ;;
    esac
}
peer_h2c_port() {
    case $1 in
    nginx) echo "$PORT_NGINX_H2C" ;;
    haproxy) echo "$PORT_HAPROXY_H2C" ;;
    bare) echo "$PORT_BARE" ;;
    towergate*) echo "$PORT_TOWERGATE" ;;
    esac
}

# Starts PEER with the ROUTES configuration, pinned alone on PROXY_CPU with
# one worker; sets PEER_PID. WRAP (optional) is a command prefix such as
# "valgrind --tool=callgrind ..."; SINGLE=1 runs nginx without a master.
start_peer() {
    local peer=$1 routes=${2:-1} logf="$WORK/$1-$2.log" cmd=()
    case $peer in
    direct)
        PEER_PID=$UPSTREAM_PID
        return 0
        ;;
    nginx)
        local conf="$WORK/nginx/nginx-$routes.conf"
        [ "${SINGLE:-0}" = 1 ] && conf="$WORK/nginx/nginx-$routes-single.conf"
        cmd=(nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$conf")
        ;;
    nginx-alt) # nginx-ROUTES.conf on PORT_NGINX_ALT (ROUTES: "log")
        cmd=(nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx-$routes.conf")
        ;;
    haproxy)
        cmd=(haproxy -db -f "$WORK/haproxy/haproxy-$routes.cfg")
        ;;
    bare)
        cmd=("$BIN/bare-proxy" --listen "127.0.0.1:$PORT_BARE" --upstream "127.0.0.1:$PORT_UP" --threads 1)
        ;;
    bare-mt) # the same on tokio's multi-thread scheduler (one worker), as towergate
        cmd=("$BIN/bare-proxy" --listen "127.0.0.1:$PORT_BARE" --upstream "127.0.0.1:$PORT_UP" --threads 1 --multi-thread)
        ;;
    towergate | towergate-alt) # -alt: a config listening on PORT_TOWERGATE_ALT
        cmd=("$BIN/towergate" --worker-threads 1 run --config "$WORK/towergate-$routes.yaml")
        ;;
    *) die "unknown peer $peer" ;;
    esac
    # shellcheck disable=SC2086
    taskset -c "$PROXY_CPU" ${WRAP:-} "${cmd[@]}" >"$logf" 2>&1 &
    PEER_PID=$!
    STARTED_PIDS+=("$PEER_PID")
    if ! wait_port "$(peer_port "$peer")"; then
        log "$peer did not start; its log:"
        tail -5 "$logf" >&2
        return 1
    fi
    # Wrapped (valgrind) peers are slow to be ready to serve after binding.
    return 0
}

# Stops a process we started (SIGTERM, then SIGKILL after 10 s).
stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 200); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    forget_pid "$pid"
}

# Takes a pid off the list of processes to stop at exit.
forget_pid() {
    local keep=() p
    for p in "${STARTED_PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    STARTED_PIDS=("${keep[@]}")
}

stop_peer() {
    local peer=$1 pid=$2
    [ "$peer" = direct ] && return 0
    stop_pid "$pid"
    wait_port_free "$(peer_port "$peer")" || log "$peer port still busy"
}

cleanup() {
    local p
    for p in "${STARTED_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${STARTED_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    STARTED_PIDS=()
}

# The pid and every descendant (nginx's workers).
pid_tree() {
    local pid=$1 c
    echo "$pid"
    for c in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do pid_tree "$c"; done
}

# utime + stime of all the processes of the tree, in clock ticks.
cpu_ticks() {
    local p
    for p in $(pid_tree "$1"); do cat "/proc/$p/stat" 2>/dev/null; done |
        awk '{ sub(/.*\) /, ""); t += $12 + $13 } END { print t + 0 }'
}

# Resident memory of the tree in KiB.
rss_kb() {
    local p
    for p in $(pid_tree "$1"); do cat "/proc/$p/status" 2>/dev/null; done |
        awk '/^VmRSS:/ { t += $2 } END { print t + 0 }'
}

# Busy and total jiffies of one CPU, from /proc/stat.
cpu_jiffies() {
    awk -v c="cpu$1" '$1 == c { busy = $2 + $3 + $4 + $7 + $8 + $9; print busy, busy + $5 + $6 }' /proc/stat
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", b - a }'; }
