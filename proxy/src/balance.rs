//! Endpoint choice by load: power of two choices over a peak-sensitive latency EWMA.
//! The arithmetic is pure; [`Loads`] keeps the per-endpoint state across view versions.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How fast old latency observations fade.
const DECAY: Duration = Duration::from_secs(10);
/// The floor of a cost, so requests in flight count even before any latency is known.
const MIN_COST_NS: f64 = 1_000.0;
/// What a failed connection counts as: a dead endpoint fails fast, and must not look fast.
const FAILURE_PENALTY: Duration = Duration::from_secs(1);

/// A peak-EWMA of one endpoint's latency plus its requests in flight.
#[derive(Debug)]
pub struct Load {
    inner: Mutex<LoadState>,
}

#[derive(Debug)]
struct LoadState {
    ewma_ns: f64,
    stamp: Instant,
    pending: u32,
}

impl Load {
    fn new(now: Instant) -> Self {
        Load {
            inner: Mutex::new(LoadState {
                // Unknown is cheapest: a new endpoint is tried at once and then measured.
                ewma_ns: 0.0,
                stamp: now,
                pending: 0,
            }),
        }
    }

    /// The cost P2C compares: latency weighted by queue depth. The latency fades toward zero
    /// while nothing is observed, so an endpoint left alone (or penalized) is tried again.
    pub fn cost(&self) -> f64 {
        match self.inner.lock() {
            Ok(s) => {
                let faded = next_ewma(
                    s.ewma_ns,
                    Duration::ZERO,
                    Instant::now().saturating_duration_since(s.stamp),
                );
                faded.max(MIN_COST_NS) * f64::from(s.pending + 1)
            }
            Err(_) => f64::MAX,
        }
    }

    /// Makes the endpoint look as slow as [`FAILURE_PENALTY`]; the penalty fades like any peak.
    pub fn penalize(&self, now: Instant) {
        if let Ok(mut s) = self.inner.lock() {
            s.ewma_ns = s.ewma_ns.max(FAILURE_PENALTY.as_nanos() as f64);
            s.stamp = now;
        }
    }

    fn idle_for(&self, idle: Duration, now: Instant) -> bool {
        match self.inner.lock() {
            Ok(s) => s.pending == 0 && now.saturating_duration_since(s.stamp) >= idle,
            Err(_) => true,
        }
    }

    /// Marks a request in flight until the returned guard records its latency.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.begin(true)
    }

    fn begin(self: &Arc<Self>, observe: bool) -> InFlight {
        if let Ok(mut s) = self.inner.lock() {
            s.pending += 1;
        }
        InFlight {
            load: self.clone(),
            started: Instant::now(),
            observe,
        }
    }

    /// Counts an open TCP connection toward the load without timing it (its length says
    /// nothing about the endpoint's speed).
    pub fn start_connection(self: &Arc<Self>) -> InFlight {
        self.begin(false)
    }

    fn finish(&self, rtt: Option<Duration>, now: Instant) {
        if let Ok(mut s) = self.inner.lock() {
            s.pending = s.pending.saturating_sub(1);
            let Some(rtt) = rtt else {
                s.stamp = now;
                return;
            };
            s.ewma_ns = next_ewma(s.ewma_ns, rtt, now.saturating_duration_since(s.stamp));
            s.stamp = now;
        }
    }
}

/// A peak EWMA: a slower observation takes over at once, faster ones blend in over [`DECAY`].
pub fn next_ewma(ewma_ns: f64, rtt: Duration, elapsed: Duration) -> f64 {
    let rtt_ns = rtt.as_nanos() as f64;
    if rtt_ns > ewma_ns {
        return rtt_ns;
    }
    let w = (-elapsed.as_secs_f64() / DECAY.as_secs_f64()).exp();
    ewma_ns * w + rtt_ns * (1.0 - w)
}

impl InFlight {
    /// The request could not reach the endpoint: count a failure instead of its latency.
    pub fn failed(mut self) {
        self.observe = false;
        self.load.penalize(Instant::now());
    }
}

/// Records the latency of one request when dropped.
pub struct InFlight {
    load: Arc<Load>,
    started: Instant,
    observe: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = Instant::now();
        let rtt = self.observe.then(|| now - self.started);
        self.load.finish(rtt, now);
    }
}

/// Of two distinct random candidates, the cheaper; one candidate needs no choice.
/// `rolls` gives two uniform numbers.
pub fn p2c(n: usize, rolls: (usize, usize), cost: impl Fn(usize) -> f64) -> Option<usize> {
    match n {
        0 => None,
        1 => Some(0),
        _ => {
            let a = rolls.0 % n;
            let b = (a + 1 + rolls.1 % (n - 1)) % n;
            Some(if cost(b) < cost(a) { b } else { a })
        }
    }
}

/// The load of every endpoint recently used.
#[derive(Debug, Default)]
pub struct Loads {
    by_addr: Mutex<HashMap<SocketAddr, Arc<Load>>>,
}

impl Loads {
    pub fn get(&self, addr: SocketAddr) -> Arc<Load> {
        match self.by_addr.lock() {
            Ok(mut m) => m
                .entry(addr)
                .or_insert_with(|| Arc::new(Load::new(Instant::now())))
                .clone(),
            Err(_) => Arc::new(Load::new(Instant::now())),
        }
    }

    /// Forgets endpoints with nothing in flight that nobody used for `idle`.
    pub fn prune(&self, idle: Duration) {
        let now = Instant::now();
        if let Ok(mut m) = self.by_addr.lock() {
            m.retain(|_, l| Arc::strong_count(l) > 1 || !l.idle_for(idle, now));
        }
    }

    /// Forgets endpoints that left discovery: if one comes back (a restarted pod keeps its
    /// address), it starts fresh instead of carrying an old failure penalty.
    pub fn forget(&self, addrs: &[SocketAddr]) {
        if let Ok(mut m) = self.by_addr.lock() {
            for a in addrs {
                m.remove(a);
            }
        }
    }

    /// Picks among `addrs` by P2C.
    pub fn pick(&self, addrs: &[SocketAddr]) -> Option<(SocketAddr, Arc<Load>)> {
        let loads: Vec<Arc<Load>> = addrs.iter().map(|a| self.get(*a)).collect();
        let i = p2c(
            addrs.len(),
            (fastrand::usize(..), fastrand::usize(..)),
            |i| loads[i].cost(),
        )?;
        Some((addrs[i], loads[i].clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forgotten_endpoint_comes_back_without_its_penalty() {
        let loads = Loads::default();
        let addr: SocketAddr = "10.0.0.1:80".parse().expect("addr");
        loads.get(addr).start().failed();
        assert!(loads.get(addr).cost() > 1e8);
        loads.forget(&[addr]);
        assert!(loads.get(addr).cost() <= MIN_COST_NS);
    }

    #[test]
    fn p2c_picks_two_distinct_candidates_and_keeps_the_cheaper() {
        let costs = [5.0, 1.0, 9.0];
        for a in 0..3 {
            for b in 0..2 {
                let i = p2c(3, (a, b), |i| costs[i]).expect("choice");
                let first = a % 3;
                let second = (first + 1 + b % 2) % 3;
                assert_ne!(first, second);
                assert_eq!(costs[i], costs[first].min(costs[second]));
            }
        }
        assert_eq!(p2c(0, (0, 0), |_| 0.0), None);
        assert_eq!(p2c(1, (7, 7), |_| 0.0), Some(0));
    }

    #[test]
    fn the_ewma_jumps_to_a_peak_and_decays_toward_faster_samples() {
        let slow = next_ewma(1e6, Duration::from_millis(50), Duration::from_secs(1));
        assert_eq!(slow, 50e6);
        let faster = next_ewma(slow, Duration::from_millis(1), Duration::from_secs(10));
        assert!(faster < slow && faster > 1e6, "{faster}");
    }

    #[test]
    fn an_endpoint_with_requests_in_flight_costs_more() {
        let loads = Loads::default();
        let addr: SocketAddr = "10.0.0.1:80".parse().expect("addr");
        let load = loads.get(addr);
        let idle = load.cost();
        let guard = load.start();
        assert!(load.cost() > idle);
        drop(guard);
    }

    #[test]
    fn a_failed_endpoint_costs_more_than_a_slow_one_and_p2c_avoids_it() {
        let loads = Loads::default();
        let dead: SocketAddr = "10.0.0.1:80".parse().expect("addr");
        let slow: SocketAddr = "10.0.0.2:80".parse().expect("addr");
        loads.get(dead).start().failed();
        let guard = loads.get(slow).start();
        std::thread::sleep(Duration::from_millis(5));
        drop(guard);
        assert!(loads.get(dead).cost() > loads.get(slow).cost());
        for _ in 0..50 {
            let (picked, _) = loads.pick(&[dead, slow]).expect("a pick");
            assert_eq!(picked, slow);
        }
    }

    #[test]
    fn pruning_keeps_recently_used_endpoints_and_their_latency() {
        let loads = Loads::default();
        let addr: SocketAddr = "10.0.0.1:80".parse().expect("addr");
        drop(loads.get(addr).start());
        // The recorded latency and its time, not `cost()`: that fades with the clock, so two
        // reads a few milliseconds apart (a busy machine) differ.
        let recorded = |l: &Loads| {
            l.get(addr)
                .inner
                .lock()
                .map(|s| (s.ewma_ns, s.stamp))
                .expect("lock")
        };
        let before = recorded(&loads);
        loads.prune(Duration::from_secs(60));
        assert_eq!(recorded(&loads), before, "a fresh endpoint was forgotten");
        loads.prune(Duration::ZERO);
        assert!(loads.by_addr.lock().map(|m| m.is_empty()).unwrap_or(false));
    }
}
