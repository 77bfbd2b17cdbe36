# keepalive in a container. The install steps live in scripts/setup.sh, which CI runs on
# every change; this file only wraps them.
FROM debian:bookworm-slim

RUN apt-get update -q \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
       python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/keepalive
COPY . .
RUN bash scripts/setup.sh && rm -rf /var/lib/apt/lists/* /root/.cache

# Inside a container the service must listen beyond loopback to be reachable; publish the
# port only to the host's loopback (docker run -p 127.0.0.1:8900:8900) unless you mean it.
ENV KEEPALIVE_HOST=0.0.0.0 \
    KEEPALIVE_STATE_DIR=/var/lib/keepalive
VOLUME /var/lib/keepalive
EXPOSE 8900
STOPSIGNAL SIGTERM
CMD ["/opt/keepalive/.venv/bin/keepalive", "serve"]
