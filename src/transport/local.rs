//! [`LocalHost`]: runs commands on this machine with `sh -c`. Proves the [`Host`] trait is
//! backend-neutral (uploads, writes and facts come from the trait unchanged) and serves tests
//! and a future "the machine running rvcluster is a node" setup. Touches nothing remote.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::error::{Result, TransportError};
use super::host::{ExecOutput, Host};
use super::target::Become;

pub struct LocalHost {
    name: String,
    privilege: Become,
}

impl LocalHost {
    pub fn new(name: impl Into<String>) -> LocalHost {
        LocalHost {
            name: name.into(),
            privilege: Become::None,
        }
    }
    pub fn with_privilege(mut self, privilege: Become) -> LocalHost {
        self.privilege = privilege;
        self
    }
}

impl Host for LocalHost {
    fn name(&self) -> &str {
        &self.name
    }

    fn address(&self) -> String {
        "local".into()
    }

    fn privilege(&self) -> Become {
        self.privilege
    }

    fn login_user(&self) -> String {
        std::env::var("USER").unwrap_or_default()
    }

    fn exec_held_raw(
        &mut self,
        command: &str,
        prefix: &[u8],
        marker: &str,
        _timeout: Option<Duration>,
    ) -> Result<Box<dyn super::held::Held>> {
        let fail = |cause: std::io::Error| local_error(&self.name, cause);
        let mut child = spawn_sh(command).map_err(fail)?;
        let mut stdin = child.stdin.take().expect("piped");
        let mut out = child.stdout.take().expect("piped");
        let mut err = child.stderr.take().expect("piped");
        let stderr = std::thread::spawn(move || {
            let mut v = vec![];
            let _ = err.read_to_end(&mut v);
            v
        });
        let _ = stdin.write_all(prefix);
        let mut head = vec![];
        let mut buf = [0u8; 8192];
        let mut ended = false;
        while super::held::head_end(&head, marker).is_none() {
            match out.read(&mut buf) {
                Ok(0) => {
                    ended = true;
                    break;
                }
                Ok(n) => head.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(fail(e)),
            }
        }
        Ok(Box::new(LocalHeld { name: self.name.clone(), child, stdin, out, stderr, head, ended }))
    }

    fn exec_raw(
        &mut self,
        command: &str,
        stdin: &mut dyn Read,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput> {
        let fail = |cause: std::io::Error| local_error(&self.name, cause);
        let mut child = spawn_sh(command).map_err(fail)?;
        let mut out_pipe = child.stdout.take().expect("piped");
        let mut err_pipe = child.stderr.take().expect("piped");
        let mut in_pipe = child.stdin.take().expect("piped");
        let start = Instant::now();
        let pgid = child.id() as i32;
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let (status, stdout, stderr, timed_out) = std::thread::scope(|s| {
            let out_t = s.spawn(move || {
                let mut v = vec![];
                let _ = out_pipe.read_to_end(&mut v);
                v
            });
            let err_t = s.spawn(move || {
                let mut v = vec![];
                let _ = err_pipe.read_to_end(&mut v);
                v
            });
            let watchdog = s.spawn(move || {
                let Some(t) = timeout else { return false };
                if done_rx
                    .recv_timeout(t.saturating_sub(start.elapsed()))
                    .is_err()
                {
                    // Kill the whole group: grandchildren would otherwise keep the pipes open.
                    // SAFETY: plain kill(2) on the process group created for this command.
                    unsafe { libc::kill(-pgid, libc::SIGKILL) };
                    return true;
                }
                false
            });
            // A command that does not read its stdin closes the pipe: that is not an error.
            let _ = std::io::copy(stdin, &mut in_pipe);
            let _ = in_pipe.flush();
            drop(in_pipe);
            let status = child.wait().map_err(fail);
            let stdout = out_t.join().unwrap_or_default();
            let stderr = err_t.join().unwrap_or_default();
            let _ = done_tx.send(());
            let timed_out = watchdog.join().unwrap_or(false);
            (status, stdout, stderr, timed_out)
        });
        if timed_out {
            return Err(TransportError::Timeout {
                host: self.name.clone(),
                what: "command".into(),
                after: timeout.unwrap_or_default(),
            });
        }
        let status = status?;
        Ok(ExecOutput {
            status: status.code().unwrap_or(-1),
            stdout,
            stderr,
        })
    }
}

struct LocalHeld {
    name: String,
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    out: std::process::ChildStdout,
    stderr: std::thread::JoinHandle<Vec<u8>>,
    head: Vec<u8>,
    ended: bool,
}

impl super::held::Held for LocalHeld {
    fn head(&self) -> &[u8] {
        &self.head
    }
    fn ended(&self) -> bool {
        self.ended
    }
    fn exchange(&mut self, input: &mut dyn Read, marker: &str, _timeout: Option<Duration>) -> Result<(Vec<u8>, Vec<u8>)> {
        let out = &mut self.out;
        let stdout = std::thread::scope(|s| {
            // Read the answer while the request is written: neither side can block the other.
            let reader = s.spawn(move || {
                let (mut got, mut buf) = (vec![], [0u8; 8192]);
                while super::held::head_end(&got, marker).is_none() {
                    match out.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                got
            });
            // The command may stop reading (it ended): the reader says so.
            let _ = std::io::copy(input, &mut self.stdin);
            let _ = self.stdin.flush();
            reader.join().unwrap_or_default()
        });
        if super::held::head_end(&stdout, marker).is_none() {
            self.ended = true;
            return Err(TransportError::Session { host: self.name.clone(), what: "a request to the held command".into(), cause: "it ended before answering".into() });
        }
        Ok((stdout, vec![]))
    }
    fn finish(self: Box<Self>, input: &[u8], _timeout: Option<Duration>) -> Result<ExecOutput> {
        let LocalHeld { name, mut child, mut stdin, mut out, stderr, .. } = *self;
        let writer = std::thread::spawn({
            let input = input.to_vec();
            move || {
                let _ = stdin.write_all(&input);
            }
        });
        let mut stdout = vec![];
        let _ = out.read_to_end(&mut stdout);
        let _ = writer.join();
        let status = child.wait().map_err(|e| TransportError::Session {
            host: name.clone(),
            what: "running a local command".into(),
            cause: e.to_string(),
        })?;
        Ok(ExecOutput { status: status.code().unwrap_or(-1), stdout, stderr: stderr.join().unwrap_or_default() })
    }
}

fn local_error(host: &str, cause: std::io::Error) -> TransportError {
    TransportError::Session { host: host.to_string(), what: "running a local command".into(), cause: cause.to_string() }
}

/// `sh -c command` with every stream piped, in its own process group (so a timeout kills all).
fn spawn_sh(command: &str) -> std::io::Result<std::process::Child> {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
}
