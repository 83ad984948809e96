//! Held commands: a command started on a host that prints a head (its facts) and then waits
//! for input on stdin, keeping its channel open. rvcluster's converge takes the board lock and
//! reads the facts in such a command, plans locally, streams uploads on other channels, and only
//! then sends the apply script on the held command's stdin: one remote command per host, and
//! the lock lives exactly as long as the channel (a lost client closes it, and the lock with it).

use std::time::Duration;

use super::error::Result;
use super::host::ExecOutput;

/// A started command whose stdout has reached its marker line.
pub trait Held: Send {
    /// Stdout up to and including the marker (or everything, when the command ended before it).
    fn head(&self) -> &[u8];
    /// Whether the command already ended (then [`Held::finish`] only collects its status).
    fn ended(&self) -> bool;
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
