//! Gives memory that big, short-lived allocations freed back to the kernel.
//!
//! Hub nodes, agents and gateways build and drop whole configs on every change: megabytes at
//! 10,000 routes. glibc's malloc keeps what they free in its arenas, fragmented between live
//! blocks, and returns it only from the top of each heap, so resident memory grew with every
//! bulk load and never came back. Measured after loading 10,000 shared routes in `meridian
//! dev`: a gateway held 292 MB where a freshly started one serving the same routes held 108 MB,
//! and an agent 260 MB; `malloc_trim(0)` brought them to 162 MB and 132 MB. So the long-running
//! subcommands trim every [`PERIOD`] on the blocking pool, as tcmalloc's background thread
//! releases free pages. A trim walks the free lists of every arena: about a millisecond for a
//! heap of a hundred megabytes, and less when little was freed.

use std::time::Duration;

/// How often the process trims.
pub const PERIOD: Duration = Duration::from_secs(10);

/// Trims every [`PERIOD`] until the runtime shuts down.
pub async fn trim_periodically() {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate: nothing to give back at start.
    tick.tick().await;
    loop {
        tick.tick().await;
        if tokio::task::spawn_blocking(trim).await.is_err() {
            return;
        }
    }
}

/// Returns the free pages of every malloc arena to the kernel; whether any were.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn trim() -> bool {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: malloc_trim is glibc's, declared with its C signature; it takes each arena's
    // lock itself, so it may run while other threads allocate, and it frees nothing in use.
    unsafe { malloc_trim(0) == 1 }
}

/// Other allocators return memory on their own terms.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() -> bool {
    false
}

#[cfg(test)]
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap()
    }

    #[test]
    fn trimming_gives_fragmented_free_memory_back() {
        // 256 MB in 4 KiB blocks (below the mmap threshold, so from the heap), then every
        // block freed but one in 64: the free memory sits between live blocks, where malloc
        // alone never returns it.
        let mut blocks: Vec<Vec<u8>> = (0..65_536).map(|i| vec![i as u8; 4096]).collect();
        let kept: Vec<Vec<u8>> = blocks.iter_mut().step_by(64).map(std::mem::take).collect();
        drop(blocks);
        let before = rss_kib();
        assert!(trim(), "there was memory to give back");
        let after = rss_kib();
        assert!(
            before.saturating_sub(after) > 100 * 1024,
            "RSS {before} KiB before the trim, {after} KiB after"
        );
        assert_eq!(kept.len(), 1024);
        assert!(kept.iter().enumerate().all(|(i, b)| b[0] == (i * 64) as u8));
    }
}
