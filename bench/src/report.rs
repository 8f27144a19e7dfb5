//! Figures as a table, one summary line each, and JSON.

use anyhow::Context;
use serde_json::json;

/// One measured figure.
#[derive(Clone, Debug)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
    pub target: Option<String>,
    pub peer: Option<String>,
}

impl Figure {
    pub fn new(name: impl Into<String>, value: f64, unit: impl Into<String>) -> Figure {
        Figure {
            name: name.into(),
            value,
            unit: unit.into(),
            target: None,
            peer: None,
        }
    }

    pub fn target(mut self, t: impl Into<String>) -> Figure {
        self.target = Some(t.into());
        self
    }

    pub fn peer(mut self, p: impl Into<String>) -> Figure {
        self.peer = Some(p.into());
        self
    }
}

/// A scenario's figures and notes.
#[derive(Clone, Debug)]
pub struct Report {
    pub scenario: String,
    pub notes: Vec<String>,
    pub figures: Vec<Figure>,
}

impl Report {
    pub fn new(scenario: &str) -> Report {
        Report {
            scenario: scenario.into(),
            notes: Vec::new(),
            figures: Vec::new(),
        }
    }

    pub fn note(&mut self, n: String) {
        self.notes.push(n);
    }

    pub fn push(&mut self, f: Figure) {
        self.figures.push(f);
    }

    /// One line per figure: name, value, unit, and the target and peer where there are.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for n in &self.notes {
            out.push_str(&format!("# {n}\n"));
        }
        for f in &self.figures {
            let value = if f.value >= 100.0 {
                format!("{:.0}", f.value)
            } else {
                format!("{:.2}", f.value)
            };
            out.push_str(&format!("{}: {value} {}", f.name, f.unit));
            if let Some(t) = &f.target {
                out.push_str(&format!(" (target {t})"));
            }
            if let Some(p) = &f.peer {
                out.push_str(&format!(" (peer: {p})"));
            }
            out.push('\n');
        }
        out
    }

    pub fn json(&self) -> serde_json::Value {
        json!({
            "scenario": self.scenario,
            "notes": self.notes,
            "figures": self.figures.iter().map(|f| json!({
                "name": f.name, "value": f.value, "unit": f.unit, "target": f.target, "peer": f.peer,
            })).collect::<Vec<_>>(),
        })
    }
}

/// VmRSS and RssAnon of a process, in MiB.
pub fn rss_mib(pid: u32) -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<f64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        let kib: f64 = line.split_whitespace().nth(1).context("a value")?.parse()?;
        Ok(kib / 1024.0)
    };
    Ok((field("VmRSS:")?, field("RssAnon:")?))
}
