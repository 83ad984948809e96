//! Held commands: a command started on a host that prints a head (its facts) and then waits
//! for input on stdin, keeping its channel open. rvcluster's converge takes the board lock and
//! reads the facts in such a command, plans locally, streams the uploads as requests on the
//! same command's stdin ([`Held::exchange`]), and then sends the apply script there: one remote
//! command per host, and the lock lives exactly as long as the channel (a lost client closes
//! it, and the lock with it).

use std::io::Read;
use std::time::Duration;

use super::error::Result;
use super::host::ExecOutput;

/// A request on a held command's stdin (src/converge/session.rs answers it): `@@rv upload N`,
/// a one-line command, then N bytes, the command's stdin.
pub const UPLOAD_REQUEST: &str = "@@rv upload ";
/// The answer: the command's output (stdout and stderr), `@@rv upload-status S`, then this line.
pub const UPLOAD_STATUS: &str = "@@rv upload-status ";
pub const UPLOAD_END: &str = "@@rv upload-end";

/// A started command whose stdout has reached its marker line.
pub trait Held: Send {
    /// Stdout up to and including the marker (or everything, when the command ended before it).
    fn head(&self) -> &[u8];
    /// Whether the command already ended (then [`Held::finish`] only collects its status).
    fn ended(&self) -> bool;
    /// Send all of `input` without closing stdin, then read stdout up to and including the
    /// line `marker`: one request and its answer. Returns that stdout and the stderr seen
    /// meanwhile; an error when the command ended (or the connection did) before the marker.
    fn exchange(&mut self, input: &mut dyn Read, marker: &str, timeout: Option<Duration>) -> Result<(Vec<u8>, Vec<u8>)>;
    /// Send `input`, close stdin, and read until the command exits. The returned stdout is the
    /// rest after [`Held::head`]; stderr is all of it.
    fn finish(self: Box<Self>, input: &[u8], timeout: Option<Duration>) -> Result<ExecOutput>;
}

/// Where the head ends: the first line equal to `marker`.
pub fn head_end(buf: &[u8], marker: &str) -> Option<usize> {
    let m = marker.as_bytes();
    let mut start = 0;
    while start < buf.len() {
        let end = buf[start..].iter().position(|b| *b == b'\n').map(|i| start + i)?;
        if &buf[start..end] == m {
            return Some(end + 1);
        }
        start = end + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_ends_after_the_marker_line_only() {
        assert_eq!(head_end(b"a\n@@rv end\nrest", "@@rv end"), Some(11));
        assert_eq!(head_end(b"@@rv end\n", "@@rv end"), Some(9));
        assert_eq!(head_end(b"x @@rv end\n", "@@rv end"), None);
        assert_eq!(head_end(b"@@rv ending\n@@rv end", "@@rv end"), None);
    }
}
