//! The CRD conversion webhook: an HTTPS server answering `POST /convert` with a
//! `ConversionReview` ([`review`], [`server`]), its serving certificate from the identity CA
//! ([`cert`]), and the patch that puts the CA into every SMI CRD's `caBundle` ([`ca_bundle`]), so a
//! cluster needs no manual step.

pub mod ca_bundle;
pub mod cert;
pub mod review;
pub mod server;

pub use ca_bundle::{ensure_ca_bundle, maintain_ca_bundle};
pub use cert::{service_names, serving_cert};
pub use review::review;
pub use server::serve;
