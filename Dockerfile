# cutover container image: `cutover serve` by default; the same image runs the backfill workers
# (`cutover backfill worker JOB -c ...`) and every other command. Kubernetes manifests:
# deploy/kubernetes/.
#   docker build -t registry.example.com/cutover:0.1.0 .
# The image runs as the unprivileged user cutover (10001:10001): listen on an unprivileged port
# (2525, mapped to 25 by the Service or `docker run -p 25:2525`), or give it
# CAP_NET_BIND_SERVICE yourself. Mount the configuration at /etc/cutover and a persistent
# volume at /var/lib/cutover (gateway.state_dir: the queue).

# --- build ---------------------------------------------------------------------------------
FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin cutover

# --- runtime -------------------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 cutover \
    && useradd --system --uid 10001 --gid cutover --home-dir /var/lib/cutover \
       --no-create-home --shell /usr/sbin/nologin cutover \
    && install -d -o cutover -g cutover -m 0750 /var/lib/cutover \
    && install -d -m 0755 /etc/cutover
COPY --from=builder /src/target/release/cutover /usr/local/bin/cutover
USER 10001:10001
WORKDIR /var/lib/cutover
# SMTP (gateway.listen) and admin HTTP (admin.listen) as in deploy/kubernetes/configmap.yaml.
EXPOSE 2525 8025
ENTRYPOINT ["cutover"]
CMD ["serve", "-c", "/etc/cutover/cutover.toml"]
