//! `smidge-proxy init`: writes the pod's interception rules with the system's iptables and
//! ip6tables.

pub mod rules;

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

pub use rules::{Cidr, Family, Jump, Rules};

/// Applies `rules`: for IPv4 and (when the kernel has IPv6) IPv6, our chains atomically through
/// `*tables-restore --noflush`, then the jumps into them unless they are there already. Running
/// it again leaves the same rules.
pub fn apply(rules: &Rules) -> anyhow::Result<()> {
    apply_family(Family::Ipv4, &rules.restore_input(), &Rules::jumps())?;
    if ipv6_in_kernel() {
        apply_family(Family::Ipv6, &rules.restore_input_v6(), &Rules::jumps_v6())
            .context("the IPv6 rules (without them IPv6 would bypass the proxy)")?;
    } else {
        tracing::info!("the kernel has no IPv6: no IPv6 rules needed");
    }
    Ok(())
}

/// Whether this network namespace can carry IPv6 at all (a kernel built or booted without it
/// has no `/proc/sys/net/ipv6`, and nothing to close).
fn ipv6_in_kernel() -> bool {
    std::path::Path::new("/proc/sys/net/ipv6").exists()
}

fn apply_family(family: Family, input: &str, jumps: &[Jump]) -> anyhow::Result<()> {
    let restore = family.restore();
    let mut child = Command::new(restore)
        .arg("--noflush")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| missing_or(e, restore))?;
    child
        .stdin
        .take()
        .with_context(|| format!("{restore} stdin"))?
        .write_all(input.as_bytes())
        .with_context(|| format!("writing the rules to {restore}"))?;
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for {restore}"))?;
    if !out.status.success() {
        bail!(explain(restore, &out.stderr));
    }
    let program = family.program();
    for jump in jumps {
        let rule = |op: &'static str| {
            let mut args = vec!["-t", jump.table, op, jump.builtin];
            args.extend(jump.args());
            args
        };
        let present = Command::new(program)
            .args(rule("-C"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| missing_or(e, program))?
            .success();
        if present {
            continue;
        }
        let out = Command::new(program)
            .args(rule("-A"))
            .output()
            .map_err(|e| missing_or(e, program))?;
        if !out.status.success() {
            bail!(explain(program, &out.stderr));
        }
    }
    Ok(())
}

fn missing_or(e: std::io::Error, program: &str) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        anyhow::anyhow!(
            "{program} is not installed (not found on PATH); install the iptables package"
        )
    } else {
        anyhow::anyhow!("running {program}: {e}")
    }
}

fn explain(program: &str, stderr: &[u8]) -> String {
    let said = String::from_utf8_lossy(stderr).trim().to_string();
    let lower = said.to_lowercase();
    if lower.contains("permission denied")
        || lower.contains("must be root")
        || lower.contains("operation not permitted")
    {
        format!(
            "not allowed to write iptables rules: init needs root or CAP_NET_ADMIN in the pod's network namespace ({program} said: {said})"
        )
    } else {
        format!("{program} failed: {said}")
    }
}
