//! Running the local cluster as an ordinary user: the daemon starts inside a new user, mount and
//! network namespace (`unshare --user --map-root-user --mount --net`), where it is root over
//! namespaces it creates. Only one uid is mapped, so proxies mark their sockets instead of
//! running as their own uid; `ip netns` needs `/run/netns` and `/etc/netns`, made writable here
//! in the daemon's private mount namespace.

use std::path::Path;

use anyhow::{bail, Context};
use nix::mount::{mount, MsFlags};

/// Whether this kernel lets an ordinary user make user namespaces, and if not, why.
pub fn check() -> Result<(), String> {
    let max = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok());
    if max == Some(0) {
        return Err("user namespaces are disabled (user.max_user_namespaces = 0)".into());
    }
    if std::fs::read_to_string("/proc/sys/kernel/unprivileged_userns_clone")
        .is_ok_and(|t| t.trim() == "0")
    {
        return Err(
            "unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0)"
                .into(),
        );
    }
    if std::fs::read_to_string("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
        .is_ok_and(|t| t.trim() == "1")
    {
        return Err("AppArmor restricts unprivileged user namespaces \
             (kernel.apparmor_restrict_unprivileged_userns = 1)"
            .into());
    }
    let probe = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "--net", "true"])
        .output();
    match probe {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "this kernel refused an unprivileged user namespace: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run unshare (util-linux): {e}")),
    }
}

fn tmpfs(at: &Path) -> anyhow::Result<()> {
    mount(
        Some("tmpfs"),
        at,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=755"),
    )
    .with_context(|| format!("mounting a tmpfs on {}", at.display()))
}

/// Makes `/run/netns` and `/etc/netns` writable in this (private) mount namespace. Call first
/// thing in the daemon, inside the new namespaces; `state` holds what must outlive a tmpfs.
pub fn prepare(state: &Path) -> anyhow::Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("not root inside the user namespace: the daemon must start under `unshare --user --map-root-user --mount --net`");
    }
    // Nothing mounted here leaks out to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("making the mount namespace private")?;
    let run_netns = Path::new("/run/netns");
    if run_netns.is_dir() {
        tmpfs(run_netns)?;
    } else {
        if state.starts_with("/run") {
            bail!(
                "the state directory {} is under /run, which a tmpfs hides here: pick another with --state-dir",
                state.display()
            );
        }
        tmpfs(Path::new("/run"))?;
        std::fs::create_dir(run_netns).context("creating /run/netns")?;
    }
    let etc_netns = Path::new("/etc/netns");
    if etc_netns.is_dir() {
        tmpfs(etc_netns)?;
    } else {
        // /etc belongs to the host's root: lay a writable overlay on it (kernel 5.11+).
        let upper = state.join("etc-overlay/upper");
        let work = state.join("etc-overlay/work");
        for d in [&upper, &work] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let options = format!(
            "lowerdir=/etc,upperdir={},workdir={}",
            upper.display(),
            work.display()
        );
        mount(
            Some("overlay"),
            "/etc",
            Some("overlay"),
            MsFlags::empty(),
            Some(options.as_str()),
        )
        .context("names inside pods need /etc/netns: overlaying /etc in a user namespace needs Linux 5.11 or later")?;
        std::fs::create_dir(etc_netns).context("creating /etc/netns")?;
    }
    Ok(())
}
