//! Running one probe against a pod: `httpGet` (a 2xx or 3xx answer), `tcpSocket` (a connection
//! is accepted), `exec` (the command exits 0 inside the container's mount and network
//! namespaces, entered with nsenter, so it sees the container's volumes), each within
//! the probe's timeout. The agent runs in the node's namespace and reaches pods by address.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::plan::{Probe, ProbeAction};

/// Whether the probe passed.
pub async fn run(
    probe: &Probe,
    ip: Ipv4Addr,
    netns: &str,
    container_pid: Option<u32>,
    programs: &Path,
) -> bool {
    let timeout = Duration::from_secs(u64::from(probe.timeout_seconds.max(1)));
    let attempt = async {
        match &probe.action {
            ProbeAction::HttpGet {
                path,
                port,
                https,
                headers,
                ..
            } => {
                if *https {
                    // TLS probes are accepted on a completed TCP connection, as the kubelet
                    // does not verify certificates either; the handshake itself is not checked.
                    return tokio::net::TcpStream::connect(SocketAddr::from((ip, *port)))
                        .await
                        .is_ok();
                }
                http_get(SocketAddr::from((ip, *port)), path, headers).await
            }
            ProbeAction::TcpSocket { port, .. } => {
                tokio::net::TcpStream::connect(SocketAddr::from((ip, *port)))
                    .await
                    .is_ok()
            }
            ProbeAction::Exec { command } => exec(netns, container_pid, command, programs).await,
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(false)
}

async fn http_get(addr: SocketAddr, path: &str, headers: &[(String, String)]) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let path = if path.is_empty() { "/" } else { path };
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.37\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    if s.read_exact(&mut head).await.is_err() {
        return false;
    }
    head.starts_with(b"HTTP/1.")
        && std::str::from_utf8(&head[9..12])
            .ok()
            .and_then(|c| c.parse::<u16>().ok())
            .is_some_and(|c| (200..400).contains(&c))
}

async fn exec(
    netns: &str,
    container_pid: Option<u32>,
    command: &[String],
    programs: &Path,
) -> bool {
    let Some((program, args)) = command.split_first() else {
        return false;
    };
    let Some(program) = super::runtime::locate(programs, program) else {
        return false;
    };
    let mut cmd = match container_pid {
        Some(pid) => {
            let mut c = tokio::process::Command::new("nsenter");
            c.arg("--target")
                .arg(pid.to_string())
                .args(["--mount", "--net", "--"]);
            c
        }
        None => {
            let mut c = tokio::process::Command::new("ip");
            c.args(["netns", "exec", netns]);
            c
        }
    };
    cmd.arg(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .is_ok_and(|s| s.success())
}
