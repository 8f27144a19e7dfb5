//! One control-plane process: started with its output in a log file, stopped with SIGTERM and,
//! after a grace period, SIGKILL; killed if dropped while running.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How often a stopping process is checked for having exited.
const POLL: Duration = Duration::from_millis(50);
/// How much of a log an error quotes.
const LOG_TAIL: usize = 2000;

pub struct Component {
    pub name: &'static str,
    child: Option<Child>,
    pid: u32,
    log: PathBuf,
}

impl Component {
    /// Starts `program` with `args`, its stdout and stderr appended to `log`.
    pub fn start(
        name: &'static str,
        program: &Path,
        args: &[String],
        log: PathBuf,
    ) -> anyhow::Result<Component> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out.try_clone().context("duplicating a log file handle")?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        let pid = child.id();
        tracing::info!(component = name, pid, log = %log.display(), "started");
        Ok(Component {
            name,
            child: Some(child),
            pid,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// An error if the process has exited, quoting the end of its log.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        let Some(child) = self.child.as_mut() else {
            anyhow::bail!("{} was stopped", self.name);
        };
        match child
            .try_wait()
            .with_context(|| format!("checking {}", self.name))?
        {
            None => Ok(()),
            Some(status) => {
                self.child = None;
                anyhow::bail!(
                    "{} exited ({status}); the end of {}:\n{}",
                    self.name,
                    self.log.display(),
                    tail(&self.log)
                )
            }
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited after `grace`; waits for it either way.
    pub fn stop(&mut self, grace: Duration) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = Pid::from_raw(i32::try_from(self.pid).context("a pid out of range")?);
        if child.try_wait()?.is_none() {
            // ESRCH: it exited just now; it is reaped below.
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + grace;
            while child.try_wait()?.is_none() {
                if Instant::now() >= deadline {
                    tracing::warn!(component = self.name, "did not stop on SIGTERM; killing");
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(POLL);
            }
        }
        let status = child
            .wait()
            .with_context(|| format!("waiting for {}", self.name))?;
        tracing::info!(component = self.name, %status, "stopped");
        Ok(())
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The last part of a log file, for an error message.
fn tail(log: &Path) -> String {
    let text = std::fs::read(log).unwrap_or_default();
    let start = text.len().saturating_sub(LOG_TAIL);
    String::from_utf8_lossy(&text[start..]).into_owned()
}
