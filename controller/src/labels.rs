//! The labels and annotations smidge reads and writes, spelled once.

/// On a Namespace (label or annotation) or a Pod (annotation): `enabled` puts pods in the mesh,
/// `disabled` on a pod keeps it out.
pub const INJECT: &str = "smidge.io/inject";
pub const INJECT_ENABLED: &str = "enabled";
pub const INJECT_DISABLED: &str = "disabled";

/// On a Namespace: the policy for workloads no TrafficTarget names: `deny` (SMI's default),
/// `allow-meshed` or `allow-all`.
pub const DEFAULT_POLICY: &str = "smidge.io/default-policy";

/// On a Pod the injector gave a proxy (label): the namespace of the control plane it belongs to.
/// The kubernetes provider watches only Pods with this label: they are the meshed ones.
pub const MESHED: &str = "smidge.io/control-plane-ns";

/// On smidge's own Pods (label): which component (`controller`). The injector's webhook never
/// selects them.
pub const COMPONENT: &str = "smidge.io/control-plane-component";
