//! `smidge demo`, the project's main job, run as users run it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use smidge_e2e::binary;

/// The storefront's share per backend in each step, and the intruder's refusals.
fn parse(out: &str) -> (Vec<Vec<(String, f64)>>, Vec<u64>) {
    let mut steps: Vec<Vec<(String, f64)>> = Vec::new();
    let mut refused = Vec::new();
    for line in out.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if line.starts_with("step ") {
            steps.push(Vec::new());
        } else if cols.first() == Some(&"storefront") && cols.len() >= 4 {
            if let (Some(step), Ok(share)) = (
                steps.last_mut(),
                cols[3].trim_end_matches('%').parse::<f64>(),
            ) {
                step.push((cols[1].to_string(), share));
            }
        } else if cols.first() == Some(&"intruder") && cols.get(1) == Some(&"(refused)") {
            refused.push(cols[2].parse().unwrap_or(0));
        }
    }
    (steps, refused)
}

#[test]
fn the_demo_shares_follow_the_weights_and_the_intruder_gets_403s() -> anyhow::Result<()> {
    let smidge = binary("smidge-cli", "smidge")?;
    let out = Command::new(&smidge)
        .args(["demo", "--requests", "1000"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (steps, refused) = parse(&text);
    assert_eq!(steps.len(), 3, "{text}");
    for (step, (v1, v2)) in steps.iter().zip([(90.0, 10.0), (50.0, 50.0), (0.0, 100.0)]) {
        let share = |name: &str| {
            step.iter()
                .find(|(b, _)| b == name)
                .map_or(0.0, |(_, s)| *s)
        };
        assert!((share("checkout-v1") - v1).abs() <= 5.0, "{text}");
        assert!((share("checkout-v2") - v2).abs() <= 5.0, "{text}");
    }
    assert_eq!(refused, vec![50, 50, 50], "{text}");
    assert!(text.contains("403 smidge-denied: not-authorized"), "{text}");
    Ok(())
}

#[test]
fn a_demo_killed_with_sigkill_is_cleaned_up_by_the_next_one() -> anyhow::Result<()> {
    let smidge = binary("smidge-cli", "smidge")?;
    let mut first = Command::new(&smidge)
        .args(["demo", "--keep", "--requests", "100"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = first
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("stdout"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("keeps running") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(120))?;
    first.kill()?; // SIGKILL: no cleanup runs
    first.wait()?;
    let killed = first.id();
    let left = |pid: u32| -> anyhow::Result<usize> {
        Ok(std::fs::read_dir("/run/netns")?
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("smg-demo-{pid}-"))
            })
            .count())
    };
    assert!(left(killed)? > 0, "the killed demo left nothing to clean?");

    let second = Command::new(&smidge)
        .args(["demo", "--requests", "100"])
        .output()?;
    let text = String::from_utf8_lossy(&second.stdout);
    assert!(
        second.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(text.contains("removed"), "{text}");
    assert_eq!(left(killed)?, 0, "namespaces of the killed demo remain");
    Ok(())
}
