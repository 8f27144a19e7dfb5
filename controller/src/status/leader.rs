//! Who writes status: the replica holding a coordination.k8s.io Lease. Claiming and renewing is
//! kube-lease-manager's (create when absent, take over when expired, renew `grace` before expiry);
//! [`holds`] is the fence checked before each write pass, so a replica that cannot renew (the API
//! unreachable, a long pause) stops writing by itself once its term is over.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseParams};

/// The Lease and who this replica is.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// The holder identity (the pod name in a cluster): unique per replica.
    pub identity: String,
    /// How long a claim lasts without renewal: the longest hand-over after a leader dies.
    pub duration: Duration,
    /// How long before expiry the holder renews.
    pub grace: Duration,
}

/// The field manager of one replica's Lease writes. One per replica: claiming a free Lease is a
/// server-side apply of `holderIdentity`, and only a conflict between two managers stops two
/// replicas claiming it at once (one shared manager let both "win").
pub fn lease_field_manager(identity: &str) -> String {
    format!("smidge-controller-lease-{identity}")
}

/// A lease manager for `config` (creates the Lease when absent).
pub async fn manager(client: Client, config: &LeaseConfig) -> anyhow::Result<LeaseManager> {
    if config.grace >= config.duration {
        anyhow::bail!(
            "the Lease renew grace ({:?}) must be shorter than its duration ({:?})",
            config.grace,
            config.duration
        );
    }
    let params = LeaseParams::new(
        config.identity.clone(),
        config.duration.as_secs().max(1),
        config.grace.as_secs(),
    )
    .with_field_manager(lease_field_manager(&config.identity));
    LeaseManagerBuilder::new(client, config.name.clone())
        .with_namespace(config.namespace.clone())
        .with_parameters(params)
        .build()
        .await
        .map_err(|e| anyhow::anyhow!("setting up Lease {}/{}: {e}", config.namespace, config.name))
}

/// When the term of `identity` on `lease` ends (last renewal + duration), if it holds the Lease.
pub fn term_end(lease: &Lease, identity: &str) -> Option<SystemTime> {
    let spec = lease.spec.as_ref()?;
    if spec.holder_identity.as_deref() != Some(identity) {
        return None;
    }
    let secs = u64::try_from(spec.lease_duration_seconds?).ok()?;
    let renewed: SystemTime = spec.renew_time.as_ref()?.0.into();
    renewed.checked_add(Duration::from_secs(secs))
}

/// Whether `lease` names `identity` as holder and its term has not ended at `now` (by this
/// replica's clock).
pub fn held_by(lease: &Lease, identity: &str, now: SystemTime) -> bool {
    term_end(lease, identity).is_some_and(|end| end > now)
}

/// Reads the Lease: the end of this replica's current term, or `None` when it does not hold it.
pub async fn holds(client: &Client, config: &LeaseConfig) -> anyhow::Result<Option<SystemTime>> {
    let lease = Api::<Lease>::namespaced(client.clone(), &config.namespace)
        .get(&config.name)
        .await
        .map_err(|e| anyhow::anyhow!("reading Lease {}/{}: {e}", config.namespace, config.name))?;
    Ok(term_end(&lease, &config.identity).filter(|end| *end > SystemTime::now()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn lease(holder: Option<&str>, renewed: &str, secs: i32) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                renew_time: Some(MicroTime(renewed.parse().unwrap())),
                lease_duration_seconds: Some(secs),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn at(s: &str) -> SystemTime {
        let t: k8s_openapi::jiff::Timestamp = s.parse().unwrap();
        t.into()
    }

    #[test]
    fn the_holder_holds_until_its_term_ends() {
        let l = lease(Some("a"), "2026-01-01T00:00:00Z", 15);
        assert!(held_by(&l, "a", at("2026-01-01T00:00:14Z")));
        assert!(!held_by(&l, "a", at("2026-01-01T00:00:15Z")), "expired");
        assert!(
            !held_by(&l, "b", at("2026-01-01T00:00:01Z")),
            "another holder"
        );
    }

    #[test]
    fn a_lease_without_holder_or_times_is_held_by_nobody() {
        let l = lease(None, "2026-01-01T00:00:00Z", 15);
        assert!(!held_by(&l, "a", at("2026-01-01T00:00:01Z")));
        assert!(!held_by(&Lease::default(), "a", at("2026-01-01T00:00:01Z")));
        let negative = lease(Some("a"), "2026-01-01T00:00:00Z", -1);
        assert!(!held_by(&negative, "a", at("2026-01-01T00:00:00Z")));
    }

    #[test]
    fn each_replica_claims_under_its_own_field_manager() {
        assert_ne!(lease_field_manager("a"), lease_field_manager("b"));
    }

    #[test]
    fn the_term_ends_a_duration_after_the_last_renewal() {
        let l = lease(Some("a"), "2026-01-01T00:00:00Z", 15);
        assert_eq!(term_end(&l, "a"), Some(at("2026-01-01T00:00:15Z")));
        assert_eq!(term_end(&l, "b"), None);
    }
}
