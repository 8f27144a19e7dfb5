//! The labels and annotations smidge reads and writes, spelled once.

/// On a Namespace (label or annotation) or a Pod (annotation): `enabled` puts pods in the mesh,
/// `disabled` on a pod keeps it out.
pub const INJECT: &str = "smidge.io/inject";
pub const INJECT_ENABLED: &str = "enabled";
pub const INJECT_DISABLED: &str = "disabled";

/// On a Namespace: the policy for workloads no TrafficTarget names: `deny` (SMI's default),
/// `allow-meshed` or `allow-all`.
pub const DEFAULT_POLICY: &str = "smidge.io/default-policy";
