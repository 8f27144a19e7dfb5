//! The controller's webhooks: an HTTPS server ([`server`]) answering `POST /convert` with a
//! `ConversionReview` ([`review`]) and `POST /inject` with an `AdmissionReview` of a Pod
//! ([`inject`]); its serving certificate from the identity CA ([`cert`]) or from a directory
//! cert-manager fills ([`cert_dir`]); and the patch that puts the CA into every SMI CRD's and the
//! injector's `caBundle` ([`ca_bundle`]), so a cluster needs no manual step.

pub mod ca_bundle;
pub mod cert;
pub mod cert_dir;
pub mod inject;
pub mod review;
pub mod server;

pub use ca_bundle::{ensure_ca_bundle, maintain_ca_bundle};
pub use cert::{service_names, serving_cert};
pub use review::review;
pub use server::{serve, serve_with};
