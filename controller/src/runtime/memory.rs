//! Returning freed heap to the kernel after bursts, and the open-file limit a mesh needs.

use smidge_controller::push::server;

/// A batch this large (a first sync, a big file rewritten) leaves the parser's garbage spread
/// over the allocator's arenas; glibc keeps those pages unless asked.
pub const TRIM_AFTER_EVENTS: usize = 1000;

/// Connections and subscriptions released since the last trim that make one worth it.
const TRIM_AFTER_RELEASED: u64 = 1000;

/// Returns freed memory once a burst of connections or subscriptions is over: checked every few
/// seconds, trimmed when many were released since the last trim and none in the last interval.
pub async fn trim_after_bursts(churn: &server::Churn) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
    let (mut trimmed_at, mut last) = (churn.total(), churn.total());
    loop {
        tick.tick().await;
        let now = churn.total();
        if now == last && now - trimmed_at >= TRIM_AFTER_RELEASED {
            release_free_memory();
            tracing::debug!(
                released = now - trimmed_at,
                "returned free memory after a burst"
            );
            trimmed_at = now;
        }
        last = now;
    }
}

/// Raises the soft limit of open files to the hard limit: every proxy holds a connection, and
/// the usual soft limit (1,024) is far below what a mesh needs.
pub fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "raised the open-file limit"),
            Err(e) => tracing::warn!(soft, hard, error = %e, "cannot raise the open-file limit"),
        },
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the open-file limit"),
    }
}

/// Returns free heap pages to the kernel (tens of MiB after a sync of 50,000 endpoints).
#[allow(unsafe_code)]
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas under their locks; it takes no pointers
    // from us and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
