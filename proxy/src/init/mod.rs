//! `smidge-proxy init`: writes the pod's interception rules with the system's iptables.

pub mod rules;

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

pub use rules::{Cidr, Rules};

/// Applies `rules`: our chains atomically through `iptables-restore --noflush`, then the jumps
/// into them unless they are there already. Running it again leaves the same rules.
pub fn apply(rules: &Rules) -> anyhow::Result<()> {
    let input = rules.restore_input();
    let mut child = Command::new("iptables-restore")
        .arg("--noflush")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| missing_or(e, "iptables-restore"))?;
    child
        .stdin
        .take()
        .context("iptables-restore stdin")?
        .write_all(input.as_bytes())
        .context("writing the rules to iptables-restore")?;
    let out = child
        .wait_with_output()
        .context("waiting for iptables-restore")?;
    if !out.status.success() {
        bail!(explain("iptables-restore", &out.stderr));
    }
    for (builtin, ours) in Rules::jumps() {
        let args = ["-t", "nat", "-C", builtin, "-p", "tcp", "-j", ours];
        let present = Command::new("iptables")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| missing_or(e, "iptables"))?
            .success();
        if present {
            continue;
        }
        let out = Command::new("iptables")
            .args(["-t", "nat", "-A", builtin, "-p", "tcp", "-j", ours])
            .output()
            .map_err(|e| missing_or(e, "iptables"))?;
        if !out.status.success() {
            bail!(explain("iptables", &out.stderr));
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
