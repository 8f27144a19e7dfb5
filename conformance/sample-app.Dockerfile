# The SMI conformance sample app, for real clusters: build from the repository root with
#   docker build -f conformance/sample-app.Dockerfile -t ghcr.io/smidge-mesh/sample-app .
# (CI does not build or push it; the local cluster runs the binary directly.)
FROM rust:1-slim AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p smidge-conformance --bin smidge-sample-app

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/smidge-sample-app /usr/local/bin/smidge-sample-app
ENV PORT=9091
EXPOSE 9091
ENTRYPOINT ["/usr/local/bin/smidge-sample-app"]
