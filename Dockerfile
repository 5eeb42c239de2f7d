# pgrouter container image: a release build, then a small runtime image with no shell, running
# as a non-root user. The configuration comes from a mounted file (/etc/pgrouter/pgrouter.yaml),
# secrets from environment variables (${VAR} in the file) or mounted files (password_file).
#   docker build -t pgrouter .
#   docker run -v $PWD/pgrouter.yaml:/etc/pgrouter/pgrouter.yaml:ro -p 6432:6432 -p 9930:9930 pgrouter

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin pgrouter \
    && install -D -m 0755 target/release/pgrouter /out/pgrouter

# distroless "cc": glibc and libgcc only, no shell, no package manager; user 65532 (nonroot).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/pgrouter /usr/local/bin/pgrouter
USER 65532:65532
EXPOSE 6432 9930
# admin_listen must include 127.0.0.1:9930 (e.g. 0.0.0.0:9930) for this check.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/pgrouter", "health", "--admin", "127.0.0.1:9930"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/pgrouter", "--config", "/etc/pgrouter/pgrouter.yaml"]
