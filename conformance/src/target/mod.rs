//! Where cases run: [`Local`], the local cluster (`smidge local`), and [`Kube`], the current
//! kubectl context. Traffic is made from a harness pod in the cluster, as upstream makes it.

mod kube;
mod local;

pub use self::kube::Kube;
pub use local::Local;

use serde_json::Value;

use crate::case::ObjectRef;

/// The namespace of the harness pod that makes the calls.
pub const HARNESS_NAMESPACE: &str = "smidge-conformance";
/// Its ServiceAccount; cases grant it access to the apps they deploy.
pub const HARNESS_SERVICE_ACCOUNT: &str = "harness";

/// What the runner needs from a cluster.
pub trait Target {
    /// Creates or updates objects; the error names each object refused and why.
    fn apply(&mut self, objects: &[Value]) -> Result<(), String>;
    /// Deletes objects; ones already gone are fine.
    fn delete(&mut self, refs: &[ObjectRef]) -> Result<(), String>;
    /// One object (read in `api_version`), or `None` when it does not exist.
    fn get(
        &mut self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, String>;
    /// An HTTP request made from the harness pod: the status and body.
    fn fetch(&mut self, method: &str, url: &str, body: &str) -> Result<(u16, String), String>;
}

/// `Ok` when nothing went wrong, else every error, joined.
fn all_ok<S: AsRef<str>>(errors: &[S]) -> Result<(), String> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<_>>()
            .join("; "))
    }
}
