# keepalive in a container, as an ordinary user with Chromium's own sandbox on.
# Every install step lives in scripts/setup.sh, which CI runs the same way on every change
# (tests/integration/test_non_root.py: the Debian packages as root, the rest as a new user).
FROM debian:bookworm-slim

RUN apt-get update -q \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
       python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/keepalive
COPY . .
# as root: the Debian packages only
RUN bash scripts/setup.sh --packages-only && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 1000 keepalive \
    && chown -R keepalive: /opt/keepalive \
    && install -d -o keepalive -g keepalive -m 0700 /var/lib/keepalive
USER keepalive
# as the service's user: .venv (the service) and .venv-jupyter (the sessions' Jupyter side)
RUN bash scripts/setup.sh && rm -rf /home/keepalive/.cache

# Inside a container the service must listen beyond loopback to be reachable; publish the
# port only to the host's loopback (docker run -p 127.0.0.1:8900:8900) unless you mean it.
# Chromium's sandbox needs user namespaces, which Docker's default seccomp profile refuses:
# run with a seccomp profile that allows them (or --security-opt seccomp=unconfined).
ENV KEEPALIVE_HOST=0.0.0.0 \
    KEEPALIVE_STATE_DIR=/var/lib/keepalive
VOLUME /var/lib/keepalive
EXPOSE 8900
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["/opt/keepalive/.venv/bin/python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8900/health', timeout=8)"]
STOPSIGNAL SIGTERM
CMD ["/opt/keepalive/.venv/bin/keepalive", "serve"]
