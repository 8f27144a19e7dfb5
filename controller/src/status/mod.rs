//! Status and Events on SMI objects: what `smidge lint` would say about each object becomes its
//! `Accepted`/`ResolvedRefs` conditions and Warning Events, written by the one replica that holds
//! the status Lease.
//!
//! [`conditions`] and [`events`] are pure (index and findings in, desired status out); [`leader`]
//! and [`writer`] do the I/O.
//!
//! Wiring (the controller runtime, with the kubernetes provider):
//! 1. `let (status_tx, status_rx) = tokio::sync::watch::channel(Arc::new(Snapshot::default()));`
//! 2. `let writer = StatusWriter::spawn(client, Config::new(pod_name), status_rx);` inside the
//!    Tokio runtime (set `config.lease.namespace` to the controller's namespace). It never blocks
//!    the caller and needs nothing else running.
//! 3. After the apply loop changes SMI objects, Services or ServiceAccounts (what the checks
//!    read), publish `status_tx.send_replace(Arc::new(snapshot(&index, &refused, generation)))`,
//!    where `refused` are the SMI objects the providers rejected ([`refused`] of their current
//!    reports; the runtime does this) and `generation` gives each
//!    object's `metadata.generation` (or `None`; the writer then uses the one it reads).
//! 4. On shutdown, `writer.shutdown().await` gives the Lease up so another replica takes over at
//!    once; dropping it instead behaves like a crash (hand-over when the term ends).

pub mod conditions;
pub mod events;
pub mod leader;
pub mod writer;

pub use conditions::{refused, snapshot, Note, Refused, Report, Snapshot};
pub use writer::{Config, StatusWriter};
