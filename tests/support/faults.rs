//! Fault injection on lab boards, shared by the tests/faults_*.rs suites. A fault is injected at
//! an exact point, found without sleeps: the board's fault hook (tests/lab/support/fault-hook.sh,
//! installed as /usr/local/sbin/NAME) pauses the Nth matching call of a command and says so in a
//! file; the test then kills rvcluster or drops the connection, and releases the hook. Also the
//! checks every fault must pass: board locks free, no temp file, managed files whole.
#![allow(dead_code)]

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use rvlab::Board;

const FAULT_DIR: &str = "/run/rvlab/fault";

/// Condition polling (the event is a file appearing or a state changing on a board, which has
/// no notification to wait on); `alive` is checked on every round so a run that ends before
/// reaching the point fails instead of waiting for ever.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool, mut alive: impl FnMut() -> bool) {
    loop {
        if cond() {
            return;
        }
        assert!(alive(), "gave up waiting for {what}: the run it depends on ended");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Installs the fault hook as `/usr/local/sbin/{name}` on `board` and arms it: the `nth` call
/// whose arguments match `pattern` (a shell pattern against " ARGS ") pauses `when`
/// ("before", "after", or a number of stdin bytes let through).
pub fn arm(board: &Board, name: &str, nth: u32, when: &str, pattern: &str) {
    let hook = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lab/support/fault-hook.sh");
    let dst = board.path(&format!("/usr/local/sbin/{name}"));
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::copy(&hook, &dst).unwrap();
    let ctl = board.path(FAULT_DIR);
    std::fs::create_dir_all(&ctl).unwrap();
    let _ = std::fs::remove_file(ctl.join(format!("{name}.count")));
    std::fs::write(ctl.join(name), format!("{nth} {when} {pattern}\n")).unwrap();
}

/// Waits until the armed hook paused; its pid on the board.
pub fn wait_paused(board: &Board, child: &mut Child) -> u32 {
    let f = board.path(&format!("{FAULT_DIR}/paused"));
    wait_until(
        &format!("the fault point on {}", board.name()),
        || f.exists(),
        || child.try_wait().unwrap().is_none(),
    );
    std::fs::read_to_string(&f).unwrap().trim().parse().unwrap()
}

/// Installs the hook as [`arm`] does, but only to count: calls of `name` whose arguments match
/// `pattern` are counted ([`calls`]) and none pauses.
pub fn count(board: &Board, name: &str, pattern: &str) {
    arm(board, name, 0, "before", pattern);
}

/// How many calls the hook of `name` on `board` counted since it was armed.
pub fn calls(board: &Board, name: &str) -> u32 {
    std::fs::read_to_string(board.path(&format!("{FAULT_DIR}/{name}.count"))).map_or(0, |s| s.trim().parse().unwrap_or(0))
}

/// Disarms every hook on `board` and lets a paused call go on.
pub fn release(board: &Board) {
    let ctl = board.path(FAULT_DIR);
    for e in std::fs::read_dir(&ctl).into_iter().flatten().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n != "paused" && !n.ends_with(".count") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let _ = std::fs::remove_file(ctl.join("paused"));
}

/// Removes the hooks from `board` (the real commands are used again).
pub fn uninstall(board: &Board) {
    release(board);
    for e in std::fs::read_dir(board.path("/usr/local/sbin")).into_iter().flatten().flatten() {
        let _ = std::fs::remove_file(e.path());
    }
}

/// Drops the SSH connection that runs board process `pid`: kills (SIGKILL) every sshd process
/// above it except the listening daemon, as a pulled cable or a crashed sshd would. Returns how
/// many sshd processes were killed.
pub fn drop_connection(board: &Board, pid: u32) -> usize {
    let script = format!(
        "l=$(cat /run/sshd.pid); p={pid}; k=''; \
         while [ \"$p\" -gt 1 ]; do c=$(cat /proc/$p/comm); \
           case $c in sshd*) [ \"$p\" = \"$l\" ] || k=\"$k $p\";; esac; \
           p=$(awk '/^PPid:/{{print $2}}' /proc/$p/status); done; \
         [ -n \"$k\" ] && kill -KILL $k; echo $k"
    );
    let out = board.sh(&script).unwrap();
    let n = out.split_whitespace().count();
    assert!(n > 0, "{}: no sshd session process above pid {pid}", board.name());
    n
}

/// Is the board lock free (absent, or flock-able)?
pub fn lock_free(board: &Board) -> bool {
    board
        .exec_inside("[ ! -e /var/lib/rvcluster/apply.lock ] || flock -n /var/lib/rvcluster/apply.lock true")
        .unwrap()
        .status
        .success()
}

/// Waits until every board's lock is free (the held command noticed its connection is gone).
pub fn wait_locks_free(boards: &[Board]) {
    for b in boards {
        wait_until(&format!("{}'s lock to be released", b.name()), || lock_free(b), || true);
    }
}

/// Temp files rvcluster left anywhere it writes.
pub fn temp_files(board: &Board) -> String {
    let out = board
        .exec_inside(
            "find /usr/local/bin /etc/rancher /etc/systemd/system /var/lib/rvcluster /etc/rvcluster /etc/sysctl.d /etc/modules-load.d \
             -name '*.rvcluster-tmp*' 2>/dev/null",
        )
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every managed path of `board` (from /var/lib/rvcluster/managed-*.list) with what it holds:
/// `sha256:HEX` for a file, `-> TARGET` for a symlink, `absent`.
pub fn managed_files(board: &Board) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let dir = board.path("/var/lib/rvcluster");
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with("managed-") && n.ends_with(".list") {
            for p in std::fs::read_to_string(e.path()).unwrap().lines() {
                out.push((p.to_string(), file_state(board, p)));
            }
        }
    }
    out.sort();
    out
}

pub fn file_state(board: &Board, p: &str) -> String {
    let host = board.path(p);
    match std::fs::symlink_metadata(&host) {
        Err(_) => "absent".into(),
        Ok(m) if m.file_type().is_symlink() => format!("-> {}", std::fs::read_link(&host).unwrap().display()),
        Ok(_) => format!("sha256:{}", rvcluster::render::sha256_hex(&std::fs::read(&host).unwrap())),
    }
}

/// Every tag of the registry at `hostport` (plain http) resolves to a manifest whose blobs are
/// all there: `skopeo copy` of each tag to a directory (which verifies every digest). The tags.
pub fn registry_tags_whole(hostport: &str, creds: Option<&str>) -> Vec<String> {
    // A repository with uploads but no tag yet answers 404 NAME_UNKNOWN: no tags.
    let get = |path: &str| -> serde_json::Value {
        let mut c = std::process::Command::new("curl");
        c.args(["-s"]);
        if let Some(cr) = creds {
            c.args(["-u", cr]);
        }
        let out = c.arg(format!("http://{hostport}{path}")).output().unwrap();
        assert!(out.status.success(), "GET {path}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let mut tags = Vec::new();
    let catalog = get("/v2/_catalog");
    for repo in catalog["repositories"].as_array().cloned().unwrap_or_default() {
        let repo = repo.as_str().unwrap().to_string();
        let list = get(&format!("/v2/{repo}/tags/list"));
        for tag in list["tags"].as_array().cloned().unwrap_or_default() {
            let tag = tag.as_str().unwrap();
            let dest = tempfile::tempdir().unwrap();
            let mut c = std::process::Command::new("skopeo");
            c.args(["copy", "-q", "--src-tls-verify=false"]);
            if let Some(cr) = creds {
                c.args(["--src-creds", cr]);
            }
            let out = c
                .arg(format!("docker://{hostport}/{repo}:{tag}"))
                .arg(format!("dir:{}", dest.path().display()))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "tag {repo}:{tag} points at a missing or broken manifest: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            tags.push(format!("{repo}:{tag}"));
        }
    }
    tags
}

/// Waits until no remote command of rvcluster runs on `board` any more (the held lock+facts
/// command and its script, streamed uploads): whatever they clean up on exit is cleaned up.
pub fn wait_remote_commands_gone(board: &Board) {
    // The bracket keeps the pattern from matching the grep's own command line.
    let probe = "grep -l -s -e 'rvcluster[-]tmp' -e 'LC_ALL[=]C' /proc/[0-9]*/cmdline";
    wait_until(
        &format!("{}'s remote commands to end", board.name()),
        || board.exec_inside(probe).unwrap().stdout.is_empty(),
        || true,
    );
}
