//! Loopback address blocks: each lab owns one 127.A.B.0/24 with A in 10..=31 (the workspace's
//! other test helpers and benches use 127.32-63, 127.100-167 and 127.192-254), chosen from the
//! process id and a counter and held by an flock on a lock file, so parallel tests and parallel
//! test processes never collide. Owns the lock files under `<root>/locks`; touches no network
//! state other than probing whether port 22 of the block is free.

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::{IoContext, LabError, Result};

const FIRST_A: u32 = 10;
const BLOCKS: u32 = 22 * 256;
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// One /24 of loopback addresses owned by a lab for its lifetime.
#[derive(Debug)]
pub struct AddrBlock {
    a: u8,
    b: u8,
    _lock: File,
}

/// The `attempt`-th candidate block for a process and counter: (A, B) of 127.A.B.0/24.
pub fn candidate(pid: u32, counter: u32, attempt: u32) -> (u8, u8) {
    let start = pid
        .wrapping_mul(97)
        .wrapping_add(counter.wrapping_mul(7919));
    let idx = start.wrapping_add(attempt.wrapping_mul(4099)) % BLOCKS;
    ((FIRST_A + idx / 256) as u8, (idx % 256) as u8)
}

impl AddrBlock {
    /// Claims a free block; `root` holds the lock files.
    pub fn claim(root: &Path) -> Result<Self> {
        let locks = root.join("locks");
        std::fs::create_dir_all(&locks).ctx(|| format!("creating {}", locks.display()))?;
        let pid = std::process::id();
        let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
        for attempt in 0..BLOCKS {
            let (a, b) = candidate(pid, counter, attempt);
            let path = locks.join(format!("127.{a}.{b}.lock"));
            let file = File::create(&path).ctx(|| format!("creating {}", path.display()))?;
            // SAFETY: flock on a valid, owned file descriptor.
            let locked =
                unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
            if !locked {
                continue;
            }
            if !ports_free(a, b) {
                continue;
            }
            return Ok(AddrBlock { a, b, _lock: file });
        }
        Err(LabError::NoAddress)
    }

    /// 127.A.B.`host`.
    pub fn addr(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, self.a, self.b, host)
    }

    /// The block's name, `127.A.B`.
    pub fn prefix(&self) -> String {
        format!("127.{}.{}", self.a, self.b)
    }
}

/// Removes the directories of labs whose owner process is gone (its lock is free again); their
/// processes already died with the owner (lifeline). Returns the removed directories.
pub fn sweep_stale(root: &Path) -> Vec<std::path::PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return removed;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("127.") || !e.path().is_dir() {
            continue;
        }
        let lock = root.join("locks").join(format!("{name}.lock"));
        let Ok(file) = File::create(&lock) else {
            continue;
        };
        // SAFETY: flock on a valid, owned file descriptor.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0
            && std::fs::remove_dir_all(e.path()).is_ok()
        {
            removed.push(e.path());
        }
    }
    removed
}

/// Whether someone outside our locking scheme already listens in the block.
fn ports_free(a: u8, b: u8) -> bool {
    [(2u8, 5000u16), (10, 22), (11, 22)]
        .iter()
        .all(|&(h, port)| TcpListener::bind((Ipv4Addr::new(127, a, b, h), port)).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_stay_in_range_and_differ_per_counter() {
        for pid in [1u32, 4242, 4_194_303] {
            for c in 0..50 {
                let (a, _) = candidate(pid, c, 0);
                assert!((10..=31).contains(&a));
            }
            assert_ne!(candidate(pid, 0, 0), candidate(pid, 1, 0));
            assert_ne!(candidate(pid, 0, 0), candidate(pid, 0, 1));
        }
    }

    #[test]
    fn stale_lab_dirs_are_swept_but_locked_ones_stay() {
        let dir = std::env::temp_dir().join(format!("rvlab-sweep-test-{}", std::process::id()));
        let held = AddrBlock::claim(&dir).unwrap();
        std::fs::create_dir_all(dir.join(held.prefix()).join("boards")).unwrap();
        std::fs::create_dir_all(dir.join("127.250.1").join("boards")).unwrap();
        let removed = sweep_stale(&dir);
        assert_eq!(removed, vec![dir.join("127.250.1")]);
        assert!(dir.join(held.prefix()).exists());
        drop(held);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn two_claims_in_one_process_get_different_blocks() {
        let dir = std::env::temp_dir().join(format!("rvlab-addr-test-{}", std::process::id()));
        let x = AddrBlock::claim(&dir).unwrap();
        let y = AddrBlock::claim(&dir).unwrap();
        assert_ne!(x.prefix(), y.prefix());
        drop((x, y));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
