//! Namespaced processes: spawns `unshare` children whose pid 1 lives until the lab's lifeline pipe
//! closes (so a lab killed with SIGKILL still takes its boards with it), finds their pid 1 for
//! nsenter, and kills them. Owns the pipe and the child processes; knows nothing about boards.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{IoContext, LabError, Result};

/// A pipe whose write end the lab keeps; every namespace's pid 1 blocks reading the read end and
/// exits (taking the namespace down) when the lab process is gone.
#[derive(Debug)]
pub struct Lifeline {
    read: OwnedFd,
    _write: OwnedFd,
}

impl Lifeline {
    pub fn new() -> Result<Self> {
        let mut fds = [0i32; 2];
        // SAFETY: pipe2 writes two descriptors into the array on success.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
        if rc != 0 {
            return Err(LabError::Io {
                context: "creating lifeline pipe".into(),
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: both descriptors were just created and are owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(Lifeline {
            read,
            _write: write,
        })
    }
}

/// A running `unshare` child and the pid (in our namespace) of its pid 1.
#[derive(Debug)]
pub struct NsProcess {
    child: Child,
    pid1: u32,
}

/// unshare's arguments for a board (mount, pid and uts namespaces, private mounts, fresh /proc).
pub fn unshare_args(uts: bool) -> Vec<&'static str> {
    let mut v = vec![
        "--mount",
        "--pid",
        "--fork",
        "--mount-proc",
        "--kill-child",
        "--propagation",
        "private",
    ];
    if uts {
        v.insert(2, "--uts");
    }
    v
}

impl NsProcess {
    /// Runs `unshare <args> -- <program...>` with the lifeline's read end as fd 3 and output to `log`.
    pub fn spawn(
        unshare: &[&str],
        program: &[&str],
        envs: &[(&str, String)],
        lifeline: &Lifeline,
        log: &Path,
    ) -> Result<Self> {
        let out = File::create(log).ctx(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().ctx(|| "duplicating log".into())?;
        let mut cmd = Command::new("unshare");
        cmd.args(unshare)
            .arg("--")
            .args(program)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        cmd.env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("LANG", "C.UTF-8");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let fd = lifeline.read.as_raw_fd();
        // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if fd == 3 {
                    let flags = libc::fcntl(3, libc::F_GETFD);
                    libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
                } else if libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                LabError::Missing {
                    what: "`unshare` not found".into(),
                    fix: "apt-get install util-linux".into(),
                }
            } else {
                LabError::Io {
                    context: "spawning unshare".into(),
                    source: e,
                }
            }
        })?;
        let mut p = NsProcess { child, pid1: 0 };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(pid) = child_of(p.child.id()) {
                p.pid1 = pid;
                return Ok(p);
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                let log_text = std::fs::read_to_string(log).unwrap_or_default();
                return Err(LabError::Command {
                    command: format!("unshare {}", unshare.join(" ")),
                    status: status.to_string(),
                    stderr: log_text,
                });
            }
            if Instant::now() > deadline {
                return Err(LabError::NotReady {
                    what: "namespace".into(),
                    detail: "unshare started no child".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Host pid of the namespace's pid 1 (for nsenter).
    pub fn pid1(&self) -> u32 {
        self.pid1
    }

    /// Whether pid 1 of the namespace still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None)) && is_running(self.pid1)
    }

    /// Kills the namespace (every process in it) and waits until its pid 1 is gone.
    pub fn kill(&mut self) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGKILL);
        }
        let _ = self.child.wait();
        let deadline = Instant::now() + Duration::from_secs(60);
        while is_running(self.pid1) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether `pid` exists and is not a zombie.
pub fn is_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => stat_field(&s, 0).is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Field `n` after the comm of a /proc/<pid>/stat line (0 = state, 1 = ppid).
fn stat_field(stat: &str, n: usize) -> Option<&str> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(n)
}

/// The first child process of `parent`.
fn child_of(parent: u32) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).ok();
    if let Some(c) = children.and_then(|c| c.split_whitespace().next().and_then(|p| p.parse().ok()))
    {
        return Some(c);
    }
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            && stat_field(&s, 1) == Some(parent.to_string().as_str())
        {
            return Some(pid);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_skip_comm_with_spaces() {
        let s = "42 (a b) c) S 7 42 42 0 -1";
        assert_eq!(stat_field(s, 0), Some("S"));
        assert_eq!(stat_field(s, 1), Some("7"));
    }

    #[test]
    fn unshare_args_for_boards_include_uts() {
        assert_eq!(
            unshare_args(true),
            [
                "--mount",
                "--pid",
                "--uts",
                "--fork",
                "--mount-proc",
                "--kill-child",
                "--propagation",
                "private"
            ]
        );
    }
}
