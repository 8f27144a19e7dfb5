//! The identity CA: trust material, ServiceAccount tokens, and certificates for proxies.

pub mod issue;
pub mod review;
pub mod stored;
pub mod token;
pub mod trust;

pub use issue::{Authority, IssueError, Issued};
pub use review::{Proof, TokenReviewer};
pub use token::{Claims, TokenError, TokenKey};
pub use trust::{generate, generate_set, Generated, Trust, TrustError};
