//! `smidge-proxy`: the sidecar data plane. Not built yet; this binary says so and exits.

fn main() -> std::process::ExitCode {
    eprintln!(
        "smidge-proxy {}: the data plane is not built yet (interception, HTTP/TCP proxying, \
         authorization and metrics come with the proxy issue). It will speak protocol version {}.",
        env!("CARGO_PKG_VERSION"),
        smidge_protocol::PROTOCOL_VERSION
    );
    std::process::ExitCode::from(3)
}
