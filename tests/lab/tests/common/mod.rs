//! Helpers shared by the lab's integration tests.
#![allow(dead_code)]

use rvlab::Lab;

/// Exit code, stdout and stderr of `cmd` run on `board` over real ssh.
pub fn ssh(lab: &Lab, board: &str, cmd: &str) -> (i32, String, String) {
    let out = lab.ssh(board, cmd).unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// stdout of `cmd` on `board` over ssh; panics with stderr when it fails.
pub fn ssh_ok(lab: &Lab, board: &str, cmd: &str) -> String {
    let (code, out, err) = ssh(lab, board, cmd);
    assert_eq!(code, 0, "ssh {board} `{cmd}` exited {code}: {err}{out}");
    out
}

/// Polls `f` every 20 ms until it returns true; panics with `what` after 60 s.
pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
