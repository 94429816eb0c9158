#!/usr/bin/env python3
"""Writes the peers' configurations for one benchmark run from bench/conf/*.in.

    genconf.py WORK ROUTES [--probe NAME] [--no-master]

writes, under WORK:
  nginx/nginx-ROUTES.conf      ROUTES prefix locations /api/s0/ .. /api/sN-1/
  haproxy/haproxy-ROUTES.cfg   the same prefixes in haproxy/routes-ROUTES.map
  towergate-ROUTES.yaml        the same prefixes as ROUTES routes
With --probe NAME, towergate-ROUTES-NAME.yaml also has a route /NAME/
(declared first), to tell when a reload has taken effect.
With --no-master, nginx-ROUTES-single.conf has `master_process off` (for
callgrind, where nginx must be one process).

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


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    work, routes = argv[1], int(argv[2])
    probe = None
    if "--probe" in argv:
        probe = argv[argv.index("--probe") + 1]
    common = {"WORK": work, "PORT_UP": env_port("PORT_UP", 19000)}
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
                PORT_PLAIN=env_port("PORT_TOWERGATE", 19004),
                PORT_TLS=env_port("PORT_TOWERGATE_TLS", 19014),
                PORT_ADMIN=env_port("PORT_TOWERGATE_ADMIN", 19005),
            ),
            tls,
        ),
    )


if __name__ == "__main__":
    main(sys.argv)
