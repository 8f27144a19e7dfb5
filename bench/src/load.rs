//! The load generator: keep-alive HTTP/1.1 connections from inside a pod, closed loop for
//! throughput and open loop (a fixed request rate, latency counted from when each request was
//! due, so a slow answer is charged to every request queued behind it) for latency.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;

/// Where the load runs and what it calls.
#[derive(Clone, Debug)]
pub struct Target {
    /// The network namespace the client threads enter.
    pub netns: String,
    pub addr: SocketAddr,
    pub host: String,
    /// The core the client threads are pinned to.
    pub core: usize,
}

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    stream: TcpStream,
    request: Vec<u8>,
    buf: Vec<u8>,
}

impl Conn {
    pub fn connect(addr: SocketAddr, host: &str) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Conn {
            stream,
            request: format!("GET / HTTP/1.1\r\nhost: {host}\r\nuser-agent: smidge-bench\r\n\r\n")
                .into_bytes(),
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends one request and reads the whole answer; returns its status.
    pub fn get(&mut self) -> anyhow::Result<u16> {
        self.stream.write_all(&self.request)?;
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        loop {
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                bail!("the connection closed mid-answer");
            }
            self.buf.extend_from_slice(&chunk[..n]);
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head) = response.parse(&self.buf)? {
                let length = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .context("an answer without content-length")?;
                let length: usize = std::str::from_utf8(length.value)?.trim().parse()?;
                let status = response.code.context("a status")?;
                let want = head + length;
                while self.buf.len() < want {
                    let n = self.stream.read(&mut chunk)?;
                    if n == 0 {
                        bail!("the connection closed mid-body");
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                return Ok(status);
            }
        }
    }
}

/// Opens `n` connections from a thread in `target`'s namespace; the caller holds them open.
pub fn open_idle(target: &Target, n: usize, request: bool) -> anyhow::Result<Vec<Conn>> {
    let target = target.clone();
    std::thread::spawn(move || -> anyhow::Result<Vec<Conn>> {
        smidge_local_cluster::netns::enter_netns(&target.netns)?;
        let mut conns = Vec::with_capacity(n);
        for i in 0..n {
            let mut c = Conn::connect(target.addr, &target.host)
                .with_context(|| format!("connection {i}"))?;
            if request {
                let status = c
                    .get()
                    .with_context(|| format!("request on connection {i}"))?;
                if status != 200 {
                    bail!("connection {i} answered {status}");
                }
            }
            conns.push(c);
        }
        Ok(conns)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the connecting thread panicked"))?
}

/// A closed-loop run's result.
#[derive(Clone, Copy, Debug, Default)]
pub struct Throughput {
    pub ok: u64,
    pub errors: u64,
    pub secs: f64,
}

impl Throughput {
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.secs
    }
}

/// Each of `conns` connections sends its next request as soon as the last one is answered.
/// `during` runs on the calling thread while the measured window is open (to sample memory).
pub fn closed_loop(
    target: &Target,
    conns: usize,
    warmup: Duration,
    window: Duration,
    mut during: impl FnMut(),
) -> anyhow::Result<Throughput> {
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(Barrier::new(conns + 1));
    let mut threads = Vec::new();
    for _ in 0..conns {
        let (target, ok, errors, stop, ready) = (
            target.clone(),
            ok.clone(),
            errors.clone(),
            stop.clone(),
            ready.clone(),
        );
        threads.push(std::thread::spawn(move || -> anyhow::Result<()> {
            let setup = (|| {
                smidge_local_cluster::netns::enter_netns(&target.netns)?;
                crate::procstat::pin_current_thread(target.core)?;
                Conn::connect(target.addr, &target.host)
            })();
            ready.wait();
            let mut conn = setup?;
            while !stop.load(Ordering::Relaxed) {
                match conn.get() {
                    Ok(200) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        conn = Conn::connect(target.addr, &target.host).context(e)?;
                    }
                }
            }
            Ok(())
        }));
    }
    ready.wait();
    std::thread::sleep(warmup);
    let (ok0, err0, t0) = (
        ok.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        Instant::now(),
    );
    let end = t0 + window;
    while Instant::now() < end {
        during();
        std::thread::sleep(
            Duration::from_millis(100).min(end.saturating_duration_since(Instant::now())),
        );
    }
    let result = Throughput {
        ok: ok.load(Ordering::Relaxed) - ok0,
        errors: errors.load(Ordering::Relaxed) - err0,
        secs: t0.elapsed().as_secs_f64(),
    };
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
    }
    Ok(result)
}

/// An open-loop run's result: latencies in nanoseconds, counted from when each request was due.
pub struct Latency {
    pub histogram: Histogram<u64>,
    pub errors: u64,
}

impl Latency {
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.histogram.value_at_quantile(q) as f64 / 1e6
    }
}

/// `rate` requests per second spread evenly over `conns` connections, each request due at a fixed
/// time whatever happened to the one before. `at_open`/`at_close` run on the calling thread when
/// the measured window opens and closes (to read CPU counters).
pub fn open_loop(
    target: &Target,
    conns: usize,
    rate: u32,
    warmup: Duration,
    window: Duration,
    at_open: impl FnOnce(),
    at_close: impl FnOnce(),
) -> anyhow::Result<Latency> {
    let period = Duration::from_secs_f64(conns as f64 / f64::from(rate));
    let ready = Arc::new(Barrier::new(conns + 1));
    let go = Arc::new(Barrier::new(conns + 1));
    let start = Arc::new(std::sync::OnceLock::<Instant>::new());
    let mut threads = Vec::new();
    for i in 0..conns {
        let (target, ready, go, start) = (target.clone(), ready.clone(), go.clone(), start.clone());
        threads.push(std::thread::spawn(
            move || -> anyhow::Result<(Histogram<u64>, u64)> {
                let setup = (|| {
                    smidge_local_cluster::netns::enter_netns(&target.netns)?;
                    crate::procstat::pin_current_thread(target.core)?;
                    // Wake when due, not up to 50 µs later (the default timer slack).
                    nix::sys::prctl::set_timerslack(1)?;
                    Conn::connect(target.addr, &target.host)
                })();
                ready.wait();
                go.wait();
                let mut conn = setup?;
                let base = *start.get().context("the start time")?;
                let open = base + warmup;
                let close = open + window;
                let mut histogram = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3)?;
                let mut errors = 0;
                let mut due = base + period.mul_f64(i as f64 / conns as f64);
                while due < close {
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    let status = conn.get();
                    let latency = Instant::now().saturating_duration_since(due);
                    if due >= open {
                        match status {
                            Ok(200) => {
                                histogram.saturating_record(latency.as_nanos() as u64);
                            }
                            _ => errors += 1,
                        }
                    }
                    if status.is_err() {
                        conn = Conn::connect(target.addr, &target.host)?;
                    }
                    due += period;
                }
                Ok((histogram, errors))
            },
        ));
    }
    // Every connection is open before the first request is due.
    ready.wait();
    let base = Instant::now() + Duration::from_millis(20);
    let _ = start.set(base);
    go.wait();
    let open = base + warmup;
    let close = open + window;
    std::thread::sleep(open.saturating_duration_since(Instant::now()));
    at_open();
    std::thread::sleep(close.saturating_duration_since(Instant::now()));
    at_close();
    let mut histogram = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3)?;
    let mut errors = 0;
    for t in threads {
        let (h, e) = t
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
        histogram.add(h)?;
        errors += e;
    }
    Ok(Latency { histogram, errors })
}

/// Opens `n` mTLS connections from the namespace `netns` to a server-side proxy, presenting the
/// legitimate client certificate, each carrying one answered request; the caller holds them.
pub fn open_tls_idle(
    netns: &str,
    inbound: &crate::topology::Inbound,
    n: usize,
) -> anyhow::Result<Vec<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(inbound.ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let chain = CertificateDer::pem_slice_iter(inbound.chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(inbound.key_pem.as_bytes())?;
    let mut config =
        rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![inbound.alpn.clone()];
    let config = Arc::new(config);
    let name = ServerName::try_from(inbound.server_name.clone())?;
    let (netns, addr) = (netns.to_string(), inbound.addr);
    std::thread::spawn(move || {
        smidge_local_cluster::netns::enter_netns(&netns)?;
        let mut conns = Vec::with_capacity(n);
        let mut answer = vec![0u8; 4096];
        for i in 0..n {
            let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .with_context(|| format!("TLS connection {i} to {addr}"))?;
            tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
            // The handshake's last flight and the request go out at once, not 40 ms apart.
            tcp.set_nodelay(true)?;
            let conn = rustls::ClientConnection::new(config.clone(), name.clone())?;
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            tls.write_all(b"GET / HTTP/1.1\r\nhost: server\r\n\r\n")?;
            // The 1 KiB body and headers: read until the whole answer is in.
            let mut got = Vec::new();
            while got.len() < crate::server::BODY {
                let k = tls
                    .read(&mut answer)
                    .with_context(|| format!("the answer on TLS connection {i}"))?;
                if k == 0 {
                    bail!(
                        "TLS connection {i} closed: {}",
                        String::from_utf8_lossy(&got)
                    );
                }
                got.extend_from_slice(&answer[..k]);
            }
            if !got.starts_with(b"HTTP/1.1 200") {
                bail!(
                    "TLS connection {i} answered {}",
                    String::from_utf8_lossy(&got[..got.len().min(80)])
                );
            }
            conns.push(tls);
        }
        Ok(conns)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the connecting thread panicked"))?
}
