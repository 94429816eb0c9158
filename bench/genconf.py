#!/usr/bin/env python3
"""Writes the peers' configurations for one benchmark run from bench/conf/*.in.

    genconf.py WORK ROUTES [--probe NAME] [--no-master]
    genconf.py WORK variants

writes, under WORK:
  nginx/nginx-ROUTES.conf      ROUTES prefix locations /api/s0/ .. /api/sN-1/
  haproxy/haproxy-ROUTES.cfg   the same prefixes in haproxy/routes-ROUTES.map
  towergate-ROUTES.yaml        the same prefixes as ROUTES routes
With --probe NAME, towergate-ROUTES-NAME.yaml also has a route /NAME/
(declared first), to tell when a reload has taken effect.
With --no-master, nginx-ROUTES-single.conf has `master_process off` (for
callgrind, where nginx must be one process).

`variants` writes the towergate configurations of the features, observe and
cache scenarios (see VARIANTS below), without TLS listener:
  towergate-features.yaml      /api/s0/ plain, /jwt/ JWT RS256, /rl/ rate limit,
                               /jwks/ JWT ES256 from the bench upstream's JWKS
  towergate-features-log.yaml  /full/ JWT + rate limit, access log to a file
                               (alternate port: it runs beside the first)
  towergate-obs-off.yaml       /api/s0/, observability.enabled: false
  towergate-obs-on.yaml        /api/s0/, access log to a file, OTLP tracing at
                               1 % sampling to the bench upstream (alternate port)
  towergate-obs-log.yaml       /api/s0/, access log only    } the two halves of
                               (alternate port)             }
  towergate-obs-trace.yaml     /api/s0/, OTLP tracing only  } obs-on
  towergate-obs-metrics.yaml   /api/s0/, metrics alone: observability on, no
                               request ids made (alternate port)
  towergate-cache.yaml         /api/s0/ uncached, /cached/ cached (ttl 60s)
  towergate-redis.yaml         /api/s0/ plain, /rlredis/ rate limit, its
                               buckets in Redis (PORT_REDIS)
The RS256 route reads WORK/jwt-public.pem (written by the jwt-token binary);
the ES256 one fetches http://127.0.0.1:PORT_UP/jwks.json (WORK/jwks.json,
served by bench-upstream --jwks).

Ports come from the environment (PORT_UP, PORT_NGINX, ...), set by lib.sh.
Standard library only.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def env_port(name, default):
    return os.environ.get(name, str(default))


def fill(template, values, tls):
    with open(os.path.join(HERE, "conf", template)) as f:
        text = f.read()
    # Lines marked @TLS@ need the certificate: kept (unmarked) when there
    # is one, dropped when openssl could not make it.
    lines = []
    for line in text.splitlines(True):
        if line.lstrip().startswith("@TLS@"):
            if not tls:
                continue
            line = line.replace("@TLS@", "", 1)
        lines.append(line)
    text = "".join(lines)
    for k, v in values.items():
        text = text.replace("@%s@" % k, v)
    if "@" in text.replace("@@", ""):
        # Any placeholder left means a template and this script disagree.
        for line in text.splitlines():
            if line.count("@") >= 2 and not line.lstrip().startswith("#"):
                sys.exit("genconf: unfilled placeholder in %s: %s" % (template, line))
    return text


def prefixes(n):
    return ["/api/s%d/" % i for i in range(n)]


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    # Atomic replace, as a deploy tool would do it (matters for reloads).
    os.replace(tmp, path)


# A limit that never refuses: it measures the decision, not refusals.
RATE_LIMIT = '{ limits: [ { rate: "100000000/s" } ] }'
RATE_LIMIT_KEYS = '{ key: "header:x-api-key", limits: [ { rate: "100000000/s" } ] }'
JWT_PROVIDER = """auth_providers:
  bench-jwt:
    jwt:
      pem_files: ["@WORK@/jwt-public.pem"]
      algorithms: [RS256]
      issuer: bench
      audience: bench
  bench-jwks:
    jwt:
      jwks_url: "http://127.0.0.1:@PORT_UP@/jwks.json"
      algorithms: [ES256]
      issuer: bench
      audience: bench"""


def route(name, prefix, extra=""):
    return '  - { name: %s, match: { path_prefix: "%s" }, upstream: up%s }' % (
        name,
        prefix,
        ", " + extra if extra else "",
    )


# Access logs go to WORK/logs, not beside the configs in WORK: towergate
# watches its config's directory for hot reload, and a log written there
# would wake the watcher on every write (as /var/log and /etc are apart).
def logs_dir(work):
    path = os.path.join(work, "logs")
    os.makedirs(path, exist_ok=True)
    return path


def access_log(work, name):
    return '  access_log: { enabled: true, format: json, sink: "%s/access-%s.jsonl" }' % (
        logs_dir(work),
        name,
    )


def variants(work):
    """name -> (alternate port?, routes, extra top-level YAML)."""
    up = env_port("PORT_UP", 19000)
    return {
        "features": (
            False,
            [
                route("s0", "/api/s0/"),
                route("jwt", "/jwt/", "auth: { any_of: [bench-jwt] }"),
                route("rl", "/rl/", "rate_limit: %s" % RATE_LIMIT),
                # Keyed by a header the client sets to a new value on every
                # request (bench-client --distinct-header x-api-key).
                route("rlkeys", "/rlkeys/", "rate_limit: %s" % RATE_LIMIT_KEYS),
                route("jwks", "/jwks/", "auth: { any_of: [bench-jwks] }"),
            ],
            JWT_PROVIDER,
        ),
        "features-log": (
            True,
            [
                route(
                    "full",
                    "/full/",
                    "auth: { any_of: [bench-jwt] }, rate_limit: %s" % RATE_LIMIT,
                )
            ],
            JWT_PROVIDER + "\nobservability:\n" + access_log(work, "features"),
        ),
        "obs-off": (False, [route("s0", "/api/s0/")], "observability:\n  enabled: false"),
        "obs-on": (
            True,
            [route("s0", "/api/s0/")],
            "observability:\n  enabled: true\n"
            + access_log(work, "obs")
            + '\n  tracing: { otlp_endpoint: "http://127.0.0.1:%s", sample_ratio: 0.01 }' % up,
        ),
        # The two halves of obs-on, for the instruction counts.
        # Alternate port: the accesslog scenario runs it beside tg-plain.
        "obs-log": (True, [route("s0", "/api/s0/")], "observability:\n" + access_log(work, "obs-log")),
        "obs-trace": (
            False,
            [route("s0", "/api/s0/")],
            'observability:\n  tracing: { otlp_endpoint: "http://127.0.0.1:%s", sample_ratio: 0.01 }' % up,
        ),
        # Metrics alone (the bench client sends no request id, so none
        # goes anywhere). Alternate port: it runs beside obs-off.
        "obs-metrics": (True, [route("s0", "/api/s0/")], "observability:\n  generate_request_id: false"),
        "cache": (
            False,
            [route("s0", "/api/s0/"), route("cached", "/cached/", 'cache: { ttl: "60s" }')],
            "",
        ),
        # The store is global: a process of its own. A short decision
        # timeout is the default (50 ms); Redis runs on the load CPU.
        "redis": (
            False,
            [route("s0", "/api/s0/"), route("rlredis", "/rlredis/", "rate_limit: %s" % RATE_LIMIT)],
            'rate_limiting:\n  store: redis\n  redis: { url: "redis://127.0.0.1:%s" }'
            % env_port("PORT_REDIS", 19009),
        ),
    }


# nginx's own JSON access log, for the observe scenario: the members of
# towergate's line that nginx has (its $request_id is 32 hex digits it
# makes), written through a 64 KiB buffer as towergate's writer does.
NGINX_ACCESS_LOG = (
    "log_format bench escape=json '{\"ts\":\"$time_iso8601\",\"request_id\":\"$request_id\","
    '\"client\":\"$remote_addr\",\"method\":\"$request_method\",\"path\":\"$uri\",'
    '\"upstream\":\"$upstream_addr\",\"status\":$status,\"bytes_in\":$request_length,'
    "\"bytes_out\":$bytes_sent,\"request_time\":$request_time}';\n"
    "    access_log %s/access-nginx.jsonl bench buffer=64k flush=1s;"
)


def write_variants(work, common):
    # nginx-log.conf: nginx with its access log, on ports of its own so
    # that it runs beside the plain nginx.
    write(
        os.path.join(work, "nginx", "nginx-log.conf"),
        fill(
            "nginx.conf.in",
            dict(
                common,
                NAME="nginx-log",
                ACCESS_LOG=NGINX_ACCESS_LOG % logs_dir(work),
                MASTER="on",
                LOCATIONS="        location /api/s0/ { proxy_pass http://up; }",
                PORT_PLAIN=env_port("PORT_NGINX_ALT", 19008),
                PORT_TLS=env_port("PORT_NGINX_ALT_TLS", 19018),
                PORT_H2C=env_port("PORT_NGINX_ALT_H2C", 19028),
            ),
            False,
        ),
    )
    for name, (alt, lines, extra) in variants(work).items():
        port = ("PORT_TOWERGATE_ALT", 19006) if alt else ("PORT_TOWERGATE", 19004)
        admin = ("PORT_TOWERGATE_ALT_ADMIN", 19007) if alt else ("PORT_TOWERGATE_ADMIN", 19005)
        write(
            os.path.join(work, "towergate-%s.yaml" % name),
            fill(
                "towergate.yaml.in",
                dict(
                    common,
                    ROUTES_YAML="\n".join(lines),
                    EXTRA_YAML=extra.replace("@WORK@", work).replace("@PORT_UP@", common["PORT_UP"]),
                    PORT_PLAIN=env_port(*port),
                    PORT_TLS="0",
                    PORT_ADMIN=env_port(*admin),
                ),
                False,
            ),
        )


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    common = {"WORK": argv[1], "PORT_UP": env_port("PORT_UP", 19000)}
    if argv[2] == "variants":
        write_variants(argv[1], common)
        return
    work, routes = argv[1], int(argv[2])
    probe = None
    if "--probe" in argv:
        probe = argv[argv.index("--probe") + 1]
    tls = os.path.exists(os.path.join(work, "cert.pem"))

    # nginx
    locs = "\n".join(
        "        location %s { proxy_pass http://up; }" % p for p in prefixes(routes)
    )
    for suffix, master in (("", "on"), ("-single", "off")):
        if suffix and "--no-master" not in argv:
            continue
        write(
            os.path.join(work, "nginx", "nginx-%d%s.conf" % (routes, suffix)),
            fill(
                "nginx.conf.in",
                dict(
                    common,
                    NAME="nginx",
                    ACCESS_LOG="access_log off;",
                    MASTER=master,
                    LOCATIONS=locs,
                    PORT_PLAIN=env_port("PORT_NGINX", 19001),
                    PORT_TLS=env_port("PORT_NGINX_TLS", 19011),
                    PORT_H2C=env_port("PORT_NGINX_H2C", 19021),
                ),
                tls,
            ),
        )

    # haproxy
    write(
        os.path.join(work, "haproxy", "routes-%d.map" % routes),
        "".join("%s up\n" % p for p in prefixes(routes)),
    )
    write(
        os.path.join(work, "haproxy", "haproxy-%d.cfg" % routes),
        fill(
            "haproxy.cfg.in",
            dict(
                common,
                ROUTES=str(routes),
                MAXCONN=os.environ.get("HAPROXY_MAXCONN", "10100"),
                PORT_PLAIN=env_port("PORT_HAPROXY", 19002),
                PORT_TLS=env_port("PORT_HAPROXY_TLS", 19012),
                PORT_H2C=env_port("PORT_HAPROXY_H2C", 19022),
            ),
            tls,
        ),
    )

    # towergate
    lines = []
    if probe:
        lines.append(
            '  - { name: %s, match: { path_prefix: "/%s/" }, upstream: up }' % (probe, probe)
        )
    for i, p in enumerate(prefixes(routes)):
        lines.append('  - { name: s%d, match: { path_prefix: "%s" }, upstream: up }' % (i, p))
    name = "towergate-%d%s.yaml" % (routes, "-" + probe if probe else "")
    write(
        os.path.join(work, name),
        fill(
            "towergate.yaml.in",
            dict(
                common,
                ROUTES_YAML="\n".join(lines),
                EXTRA_YAML="",
                PORT_PLAIN=env_port("PORT_TOWERGATE", 19004),
                PORT_TLS=env_port("PORT_TOWERGATE_TLS", 19014),
                PORT_ADMIN=env_port("PORT_TOWERGATE_ADMIN", 19005),
            ),
            tls,
        ),
    )


if __name__ == "__main__":
    main(sys.argv)
