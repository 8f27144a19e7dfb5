//! What `/proc` says about a process (resident memory, CPU time) and pinning it to a core.

use anyhow::Context;
use nix::sched::{sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// Resident memory of one process, in KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Memory {
    pub vm_rss: u64,
    pub rss_anon: u64,
}

impl Memory {
    pub fn vm_rss_mib(self) -> f64 {
        self.vm_rss as f64 / 1024.0
    }

    pub fn rss_anon_mib(self) -> f64 {
        self.rss_anon as f64 / 1024.0
    }
}

/// VmRSS and RssAnon from `/proc/<pid>/status`.
pub fn memory(pid: u32) -> anyhow::Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name} in {path}"))?;
        line.split_whitespace()
            .nth(1)
            .context("a value")?
            .parse()
            .with_context(|| format!("{name} in {path}"))
    };
    Ok(Memory {
        vm_rss: field("VmRSS:")?,
        rss_anon: field("RssAnon:")?,
    })
}

/// CPU time the process's live threads have used, in nanoseconds (`/proc/<pid>/task/*/schedstat`:
/// nanosecond counters, where `/proc/<pid>/stat` counts 10 ms ticks).
pub fn cpu_ns(pid: u32) -> anyhow::Result<u64> {
    let dir = format!("/proc/{pid}/task");
    let mut total = 0;
    for task in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let path = task?.path().join("schedstat");
        // A thread may end between the listing and the read.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let ns: u64 = text
            .split_whitespace()
            .next()
            .context("an empty schedstat")?
            .parse()
            .with_context(|| format!("parsing {}", path.display()))?;
        total += ns;
    }
    Ok(total)
}

/// Pins every thread of `pid` to `core` (threads made later inherit it from their creator).
pub fn pin(pid: u32, core: usize) -> anyhow::Result<()> {
    let mut set = CpuSet::new();
    set.set(core)?;
    let dir = format!("/proc/{pid}/task");
    for task in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let tid: i32 = task?
            .file_name()
            .to_string_lossy()
            .parse()
            .context("a task id")?;
        // A thread may have ended since the listing.
        let _ = sched_setaffinity(Pid::from_raw(tid), &set);
    }
    Ok(())
}

/// Pins the calling thread to `core`.
pub fn pin_current_thread(core: usize) -> anyhow::Result<()> {
    let mut set = CpuSet::new();
    set.set(core)?;
    sched_setaffinity(Pid::from_raw(0), &set).context("pinning the load generator")?;
    Ok(())
}

/// The number of cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Resident KiB per mapped file (anonymous mappings under `[anon]`), largest first: what a
/// process's VmRSS is made of.
pub fn rss_by_mapping(pid: u32) -> anyhow::Result<Vec<(String, u64)>> {
    let path = format!("/proc/{pid}/smaps");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let mut totals: std::collections::BTreeMap<String, u64> = Default::default();
    let mut current = String::from("[anon]");
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if first.contains('-') && !first.ends_with(':') {
            // A mapping's header: range perms offset dev inode [path].
            let name = fields.nth(4).unwrap_or("[anon]");
            current = name.to_string();
        } else if first == "Rss:" {
            let kib: u64 = fields.next().unwrap_or("0").parse().unwrap_or(0);
            *totals.entry(current.clone()).or_default() += kib;
        }
    }
    let mut out: Vec<(String, u64)> = totals.into_iter().filter(|(_, k)| *k > 0).collect();
    out.sort_by_key(|(_, kib)| std::cmp::Reverse(*kib));
    Ok(out)
}
