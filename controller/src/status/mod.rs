//! Status and Events on SMI objects: what `smidge lint` would say about each object becomes its
//! `Accepted`/`ResolvedRefs` conditions and Warning Events, written by the one replica that holds
//! the status Lease.
//!
//! [`conditions`] and [`events`] are pure (index and findings in, desired status out); [`leader`]
//! and [`writer`] do the I/O.

pub mod conditions;
pub mod events;
pub mod leader;
pub mod writer;

pub use conditions::{snapshot, Note, Refused, Report, Snapshot};
pub use writer::{Config, StatusWriter};
