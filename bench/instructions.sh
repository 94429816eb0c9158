#!/usr/bin/env bash
# Noise-free figures: instructions and syscalls per proxied request.
#
#   bench/instructions.sh              # about 4 minutes
#   N1=500 N2=1500 bench/instructions.sh
#
# Instructions: each proxy runs under `valgrind --tool=callgrind` (nginx as
# one process, `master_process off; daemon off;`; HAProxy in the foreground
# with -db; one worker thread everywhere) while bench-client sends exactly N
# requests over ICONNS keep-alive connections; it is run with N1 and with N2
# requests and Ir(N2) - Ir(N1) over N2 - N1 is the cost of one request, with
# start-up, connection set-up and shutdown cancelled out. Counts are of
# user-space instructions, the same on any x86-64 machine for the same
# binaries, whatever else the machine is doing.
#
# Syscalls: the proxy runs natively; `perf stat` with the syscall
# tracepoints (raw_syscalls:sys_enter for the total, syscalls:sys_enter_<name>
# for the breakdown) is attached to it during N1 and then N2 requests (after
# a warm-up that fills the upstream pools), and the difference is divided
# the same way.
# Where perf tracepoints do not work, `strace -c -f` is used instead (the
# table says which).
#
# Per-request profiles (what costs what) are left in the raw directory as
# profile-<proxy>-{inclusive,self}.txt (bench/cgdiff.py).
#
# Run alone it writes bench/results/instructions.md; run.sh calls it as its
# "instructions" scenario and puts the figures in latest.md.
#
# Settings: N1=1000 N2=3000 ICONNS=4 IPEERS="nginx haproxy bare bare-mt
# towergate towergate-r10k bare-h2 towergate-h2" (also towergate-r100; -rN: N routes, the last
# matching; bare-mt: bare-proxy on tokio's multi-thread scheduler with one
# worker, as towergate runs, which tells the scheduler's cost apart; -h2,
# e.g. bare-h2 towergate-h2: the same from HTTP/2 clients, h2load over h2c
# with 10 streams per connection).
# The towergate variants of run.sh's features, observe and cache scenarios
# are labels too (tg-plain tg-plain-keys tg-jwt tg-es256 tg-rl tg-rl-keys tg-redis
# tg-full tg-obs-off tg-obs-on tg-obs-log tg-obs-trace tg-metrics tg-nocache tg-cached, see
# `variant` in lib.sh): their config, path and request header (the JWT) come
# from there. tg-redis starts our own Redis (PORT_REDIS) first.
# tg-cached: the first request stores the entry, so the N2 - N1 difference
# is all hits.
set -euo pipefail

: "${N1:=1000}" "${N2:=3000}" "${ICONNS:=4}"
: "${IPEERS:=nginx haproxy bare bare-mt towergate towergate-r10k bare-h2 towergate-h2}"

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap 'cleanup; finish_workdir' EXIT
trap 'exit 130' INT TERM

install_tools valgrind:valgrind perf:linux-perf strace:strace nginx:nginx haproxy:haproxy \
    openssl:openssl taskset:util-linux python3:python3 h2load:nghttp2-client
command -v valgrind >/dev/null || die "valgrind is required"
build_binaries

STANDALONE=0
if [ -z "${RAW:-}" ]; then
    STANDALONE=1
    RAW="$BENCH_DIR/results/raw/instr-$(date +%Y%m%d-%H%M%S)"
    mkdir -p "$RAW"
    INDEX="$RAW/index.tsv"
    : >"$INDEX"
fi
make_workdir
make_certs || true
python3 "$BENCH_DIR/genconf.py" "$WORK" 1 --no-master >/dev/null || die "genconf failed"
python3 "$BENCH_DIR/genconf.py" "$WORK" 100 --no-master >/dev/null || die "genconf failed"
python3 "$BENCH_DIR/genconf.py" "$WORK" 10000 --no-master >/dev/null || die "genconf failed"
variant_configs
start_upstream
# The tg-redis variant keeps its buckets in our own Redis.
if [[ " $IPEERS " == *" tg-redis "* ]]; then
    install_tools redis-server:redis-server
    start_redis || log "no Redis: tg-redis will fall back to local buckets"
fi
# Under valgrind, start-up (10,000 routes compiled) takes a while.
export WAIT_PORT_S=180

record() {
    local IFS=$'\t'
    echo "$*" >>"$INDEX"
}

# label -> peer, routes (or variant config), request path, request header
# (-h2: the same peer and request, from HTTP/2 clients.)
peer_of() {
    if variant "$1"; then echo "$V_PEER"; return; fi
    case $1 in *-h2) peer_of "${1%-h2}" ;; towergate*) echo towergate ;; *) echo "$1" ;; esac
}
routes_of() {
    if variant "$1"; then echo "$V_CONF"; return; fi
    case $1 in *-h2) routes_of "${1%-h2}" ;; *-r100) echo 100 ;; *-r10k) echo 10000 ;; *) echo 1 ;; esac
}
path_of() {
    if variant "$1"; then echo "$V_PATH"; return; fi
    echo "/api/s$(($(routes_of "$1") - 1))/x"
}
header_of() { if variant "$1"; then echo "$V_HDR"; fi; }
distinct_of() { if variant "$1"; then echo "$V_DISTINCT"; fi; }

HDR="" # the current label's request header, if any
DISTINCT="" # the current label's header with a new value per request, if any
H2=0 # 1: the current label's requests come from h2load (h2c, 10 streams per connection)
client() { # port path requests connections
    if [ "$H2" = 1 ] && (($3 >= $4)); then
        local out
        out=$(taskset -c "$LOAD_CPU" h2load -n "$3" -c "$4" -m 10 "http://127.0.0.1:$1$2" 2>&1)
        echo "$out"
        # Every request must have succeeded.
        grep -q "requests: $3 total, $3 started, $3 done, $3 succeeded" <<<"$out"
        return
    fi
    local h=()
    [ -n "$HDR" ] && h=(--header "$HDR")
    [ -n "$DISTINCT" ] && h+=(--distinct-header "$DISTINCT")
    taskset -c "$LOAD_CPU" "$BIN/bench-client" --target "127.0.0.1:$1" --path "$2" \
        --requests "$3" --connections "$4" "${h[@]}"
}

# Until the peer answers (valgrind makes start-up slow).
wait_ready() {
    local i
    for i in $(seq 1 600); do
        client "$1" "$2" 1 1 >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    return 1
}

ir_of() { # total Ir of a callgrind output
    awk '/^(summary|totals):/ { print $2; exit }' "$1"
}

# Syscall counting: perf tracepoints if they work here, else strace.
SYSCALL_TOOL=none
if command -v perf >/dev/null && perf stat -e 'syscalls:sys_enter_read' -- true >/dev/null 2>&1; then
    SYSCALL_TOOL=perf
elif command -v strace >/dev/null; then
    SYSCALL_TOOL=strace
fi
log "syscalls counted with: $SYSCALL_TOOL"
# All ~360 sys_enter_* tracepoints take perf ~15 s to tear down, so: the
# total from raw_syscalls:sys_enter, and a breakdown over the calls a proxy
# makes (whatever is not listed shows up as "other").
PERF_EVENTS=raw_syscalls:sys_enter
for s in read write readv writev recvfrom sendto recvmsg sendmsg recvmmsg sendmmsg \
    epoll_wait epoll_pwait epoll_pwait2 epoll_ctl accept accept4 connect close shutdown \
    getsockopt setsockopt futex clock_gettime gettimeofday sched_yield ioctl fcntl mmap \
    munmap madvise brk mprotect mremap getpid gettid timerfd_settime eventfd2 splice \
    sendfile64 poll ppoll pselect6 rt_sigprocmask io_uring_enter getrandom nanosleep \
    clock_nanosleep socket newfstatat openat lseek pread64 pwrite64 getrusage; do
    [ -d "/sys/kernel/tracing/events/syscalls/sys_enter_$s" ] ||
        [ -d "/sys/kernel/debug/tracing/events/syscalls/sys_enter_$s" ] || continue
    PERF_EVENTS+=",syscalls:sys_enter_$s"
done

for label in $IPEERS; do
    peer=$(peer_of "$label") routes=$(routes_of "$label") path=$(path_of "$label")
    HDR=$(header_of "$label")
    DISTINCT=$(distinct_of "$label")
    H2=0
    if [[ $label == *-h2 ]]; then
        command -v h2load >/dev/null || { log "h2load missing, $label skipped"; continue; }
        H2=1
    fi
    port=$(peer_port "$peer")
    case $peer in nginx | haproxy)
        command -v "$peer" >/dev/null 2>&1 || { log "$peer missing, skipped"; continue; } ;;
    esac

    # --- instructions
    irs=()
    for n in "$N1" "$N2"; do
        out="$RAW/callgrind-$label-$n.out"
        log "callgrind: $label, $n requests"
        WRAP="valgrind --tool=callgrind --callgrind-out-file=$out --dump-instr=no" SINGLE=1 \
            start_peer "$peer" "$routes" || { irs+=(""); continue; }
        pid=$PEER_PID
        if wait_ready "$port" "$path"; then
            client "$port" "$path" "$n" "$ICONNS" >"$RAW/callgrind-$label-$n.client" 2>&1 ||
                log "$label: client failed"
        fi
        stop_pid "$pid"
        wait_port_free "$port" || true
        irs+=("$(ir_of "$out" 2>/dev/null || true)")
    done
    record instructions 1 "$label" instr "$RAW/callgrind-$label-$N2.out" \
        "n1=$N1" "n2=$N2" "ir1=${irs[0]:-}" "ir2=${irs[1]:-}"
    # Per-request profiles: each function's Ir(N2) - Ir(N1) over N2 - N1,
    # inclusive (with callees) and self.
    if command -v callgrind_annotate >/dev/null && [ -s "$RAW/callgrind-$label-$N2.out" ]; then
        for n in "$N1" "$N2"; do
            callgrind_annotate --auto=no --threshold=100 --inclusive=yes "$RAW/callgrind-$label-$n.out" \
                >"$RAW/annotate-$label-$n-inclusive.txt" 2>/dev/null || true
            callgrind_annotate --auto=no --threshold=100 "$RAW/callgrind-$label-$n.out" \
                >"$RAW/annotate-$label-$n-self.txt" 2>/dev/null || true
        done
        for kind in inclusive self; do
            python3 "$BENCH_DIR/cgdiff.py" "$RAW/annotate-$label-$N1-$kind.txt" \
                "$RAW/annotate-$label-$N2-$kind.txt" "$N1" "$N2" 60 \
                >"$RAW/profile-$label-$kind.txt" 2>/dev/null || true
        done
    fi

    # --- syscalls
    [ "$SYSCALL_TOOL" = none ] && continue
    SINGLE=1 start_peer "$peer" "$routes" || continue
    pid=$PEER_PID
    wait_ready "$port" "$path" || true
    client "$port" "$path" 200 "$ICONNS" >/dev/null 2>&1 || true
    files=()
    for n in "$N1" "$N2"; do
        out="$RAW/syscalls-$label-$n.txt"
        if [ "$SYSCALL_TOOL" = perf ]; then
            perf stat -x, -o "$out" -e "$PERF_EVENTS" -p "$(pid_tree "$pid" | paste -sd,)" &
        else
            strace -c -f -o "$out" -p "$pid" &
        fi
        tracer=$!
        sleep 1 # attached before the first request
        client "$port" "$path" "$n" "$ICONNS" >/dev/null 2>&1 || log "$label: client failed"
        sleep 0.2
        kill -INT "$tracer" 2>/dev/null || true
        wait "$tracer" 2>/dev/null || true
        files+=("$out")
    done
    record instructions 1 "$label" syscalls "${files[1]}" "n1=$N1" "n2=$N2" \
        "tool=$SYSCALL_TOOL" "file1=${files[0]}" "file2=${files[1]}"
    stop_pid "$pid"
    wait_port_free "$port" || true
done

if [ "$STANDALONE" = 1 ]; then
    python3 "$BENCH_DIR/aggregate.py" "$RAW" >"$RAW/tables.md"
    cp "$RAW/tables.md" "$BENCH_DIR/results/instructions.md"
    cat "$RAW/tables.md"
fi
