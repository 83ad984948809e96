//! systemctl / journalctl emulation on a board, driven over real ssh.

mod common;
use common::*;
use rvlab::{Lab, Role, StartKind};

const DEMO_UNIT: &str = r#"[Unit]
Description=Demo service
[Service]
Type=simple
Environment="GREETING=hello world" SECOND=2
EnvironmentFile=-/etc/default/demo-missing
EnvironmentFile=-/etc/systemd/system/%n.env
ExecStartPre=-/bin/false
ExecStartPre=/bin/sh -c 'echo pre-ran > /run/demo-pre'
ExecStart=/bin/sh -c 'echo "greeting=$GREETING second=$SECOND token=$TOKEN args=$0"; exec sleep 100000' \
    ${SECOND}
KillMode=process
Restart=always
RestartSec=5s
[Install]
WantedBy=multi-user.target
"#;

fn write_unit(lab: &Lab, board: &str, name: &str, text: &str) {
    let p = lab.b(board).path(&format!("/etc/systemd/system/{name}"));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

#[test]
fn lifecycle_enable_now_restart_stop_disable() {
    let lab = Lab::builder().board("s1", Role::Server).start().unwrap();
    write_unit(&lab, "s1", "demo.service", DEMO_UNIT);
    ssh_ok(
        &lab,
        "s1",
        "umask 077; echo 'TOKEN=\"s3cret\"' > /etc/systemd/system/demo.service.env",
    );

    let (code, out, err) = ssh(&lab, "s1", "systemctl is-enabled demo");
    assert_eq!((code, out.as_str()), (1, "disabled\n"), "{err}");
    assert_eq!(ssh(&lab, "s1", "systemctl is-active demo").0, 3);

    let (code, _, err) = ssh(&lab, "s1", "systemctl enable --now demo.service");
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("Created symlink /etc/systemd/system/multi-user.target.wants/demo.service"),
        "{err}"
    );
    assert!(
        lab.b("s1")
            .path("/etc/systemd/system/multi-user.target.wants/demo.service")
            .is_symlink()
    );
    assert_eq!(ssh_ok(&lab, "s1", "systemctl is-enabled demo"), "enabled\n");
    assert_eq!(ssh_ok(&lab, "s1", "systemctl is-active demo"), "active\n");
    assert_eq!(ssh_ok(&lab, "s1", "cat /run/demo-pre"), "pre-ran\n");

    let starts = lab.b("s1").service_starts("demo");
    assert_eq!(starts.len(), 1);
    assert_eq!(starts[0].kind, StartKind::Start);
    let pid1 = starts[0].pid;
    // The service's environment is what systemd gives it and nothing of the ssh session that
    // ran systemctl (HOME, USER, SSH_CONNECTION...) or of the supervisor (OLDPWD, SHLVL); PWD
    // is the main process's own (the unit's `sh -c` sets it, as under systemd).
    let env = lab.b("s1").exec_inside(&format!("tr '\\0' '\\n' < /proc/{pid1}/environ")).unwrap();
    let mut names: Vec<String> = String::from_utf8_lossy(&env.stdout).lines().map(|l| l.split('=').next().unwrap().to_string()).collect();
    names.sort();
    assert_eq!(names, ["GREETING", "INVOCATION_ID", "LANG", "PATH", "PWD", "SECOND", "TOKEN"], "{}", String::from_utf8_lossy(&env.stdout));
    let log = ssh_ok(&lab, "s1", "journalctl -u demo --no-pager");
    assert!(
        log.contains("greeting=hello world second=2 token=s3cret args=2"),
        "{log}"
    );
    assert!(
        log.contains("Started demo.service - Demo service."),
        "{log}"
    );
    let status = ssh(&lab, "s1", "systemctl status demo");
    assert_eq!(status.0, 0);
    assert!(
        status.1.contains("Active: active (running)"),
        "{}",
        status.1
    );
    assert!(status.1.contains("; enabled; "), "{}", status.1);

    // start on an active unit starts nothing.
    ssh_ok(&lab, "s1", "systemctl start demo");
    assert_eq!(lab.b("s1").service_starts("demo").len(), 1);

    ssh_ok(&lab, "s1", "systemctl restart demo");
    let starts = lab.b("s1").service_starts("demo");
    assert_eq!(starts.len(), 2);
    assert_eq!(starts[1].kind, StartKind::Restart);
    assert_ne!(starts[1].pid, pid1);
    assert!(starts[1].at >= starts[0].at);
    assert_eq!(
        lab.b("s1")
            .exec_inside(&format!("kill -0 {pid1}"))
            .unwrap()
            .status
            .code(),
        Some(1)
    );
    let pid2 = starts[1].pid;
    assert_eq!(
        lab.b("s1")
            .exec_inside(&format!("kill -0 {pid2}"))
            .unwrap()
            .status
            .code(),
        Some(0)
    );

    ssh_ok(&lab, "s1", "systemctl stop demo");
    let (code, out, _) = ssh(&lab, "s1", "systemctl is-active demo");
    assert_eq!((code, out.as_str()), (3, "inactive\n"));
    assert_eq!(
        lab.b("s1")
            .exec_inside(&format!("kill -0 {pid2}"))
            .unwrap()
            .status
            .code(),
        Some(1)
    );
    // Stopping is not a crash: Restart=always does not bring it back.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(lab.b("s1").service_starts("demo").len(), 2);

    let (code, _, err) = ssh(&lab, "s1", "systemctl disable demo");
    assert_eq!(code, 0);
    assert!(err.contains("Removed"), "{err}");
    assert_eq!(ssh(&lab, "s1", "systemctl is-enabled demo").1, "disabled\n");
    let files = ssh_ok(&lab, "s1", "systemctl list-unit-files demo.service");
    assert_eq!(
        files,
        "UNIT FILE STATE PRESET\ndemo.service disabled disabled\n"
    );
    assert_eq!(
        ssh_ok(&lab, "s1", "systemctl is-system-running"),
        "running\n"
    );
    assert_eq!(ssh(&lab, "s1", "systemctl status nosuch").0, 4);
    assert_eq!(
        ssh_ok(
            &lab,
            "s1",
            "systemctl show demo -p ActiveState,UnitFileState"
        ),
        "ActiveState=inactive\nUnitFileState=disabled\n"
    );
    // Several units: each one's properties in the order named, a blank line between two.
    assert_eq!(
        ssh_ok(
            &lab,
            "s1",
            "systemctl show -p ActiveState,UnitFileState demo nosuch"
        ),
        "ActiveState=inactive\nUnitFileState=disabled\n\nActiveState=inactive\nUnitFileState=\n"
    );
}

#[test]
fn unknown_units_and_failing_prestart_or_envfile() {
    let lab = Lab::builder().board("s1", Role::Server).start().unwrap();
    let (code, out, err) = ssh(&lab, "s1", "systemctl is-enabled nosuch");
    assert_ne!(code, 0);
    assert_eq!(out, "");
    assert!(
        err.contains("Failed to get unit file state for nosuch.service: No such file or directory"),
        "{err}"
    );
    let (code, _, err) = ssh(&lab, "s1", "systemctl start nosuch");
    assert_eq!(code, 5);
    assert!(err.contains("Unit nosuch.service not found."), "{err}");
    assert_eq!(
        ssh(&lab, "s1", "systemctl is-active nosuch").1,
        "inactive\n"
    );

    write_unit(
        &lab,
        "s1",
        "pre.service",
        "[Service]\nExecStartPre=/bin/false\nExecStart=/bin/sleep 1000\n",
    );
    let (code, _, err) = ssh(&lab, "s1", "systemctl start pre");
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "Job for pre.service failed because the control process exited with error code."
        ),
        "{err}"
    );
    let (code, out, _) = ssh(&lab, "s1", "systemctl is-active pre");
    assert_eq!((code, out.as_str()), (3, "failed\n"));
    assert!(lab.b("s1").service_starts("pre").is_empty());
    assert!(
        ssh_ok(&lab, "s1", "journalctl -u pre")
            .contains("Control process exited, code=exited, status=1/FAILURE")
    );

    write_unit(
        &lab,
        "s1",
        "envf.service",
        "[Service]\nEnvironmentFile=/etc/nope.env\nExecStart=/bin/sleep 1000\n",
    );
    assert_eq!(ssh(&lab, "s1", "systemctl start envf").0, 1);
    assert!(
        ssh_ok(&lab, "s1", "journalctl -u envf -o cat")
            .contains("Failed to load environment files")
    );

    // A unit written from the host after the board looked for it is seen (state dirs are plain
    // bind mounts, no overlay caching), and the host's own units are not on the board.
    write_unit(
        &lab,
        "s1",
        "nosuch.service",
        "[Service]\nExecStart=/bin/sleep 1000\n",
    );
    ssh_ok(
        &lab,
        "s1",
        "systemctl start nosuch && systemctl is-active nosuch",
    );
    assert_eq!(
        ssh_ok(&lab, "s1", "ls /etc/systemd/system/multi-user.target.wants"),
        "firewalld.service\n",
        "only the flavour's own enabled unit"
    );

    // A unit without [Install] is static.
    assert_eq!(ssh_ok(&lab, "s1", "systemctl is-enabled pre"), "static\n");
}

#[test]
fn changed_unit_needs_daemon_reload() {
    let lab = Lab::builder().board("s1", Role::Server).start().unwrap();
    let unit = |v: &str| {
        format!("[Service]\nExecStart=/bin/sh -c 'echo version={v}; exec sleep 100000'\n")
    };
    write_unit(&lab, "s1", "app.service", &unit("one"));
    ssh_ok(&lab, "s1", "systemctl daemon-reload && systemctl start app");
    write_unit(&lab, "s1", "app.service", &unit("two"));

    let (code, _, err) = ssh(&lab, "s1", "systemctl restart app");
    assert_eq!(code, 0);
    assert!(
        err.contains("changed on disk. Run 'systemctl daemon-reload' to reload units."),
        "{err}"
    );
    let (_, status, _) = ssh(&lab, "s1", "systemctl status app");
    assert!(status.contains("changed on disk"), "{status}");
    assert_eq!(
        ssh_ok(&lab, "s1", "systemctl show app -p NeedDaemonReload --value"),
        "yes\n"
    );
    // The OLD definition ran again.
    let log = ssh_ok(&lab, "s1", "journalctl -u app -o cat");
    assert_eq!(log.matches("version=one").count(), 2, "{log}");
    assert!(!log.contains("version=two"), "{log}");

    ssh_ok(&lab, "s1", "systemctl daemon-reload");
    let (code, _, err) = ssh(&lab, "s1", "systemctl restart app");
    assert_eq!(code, 0);
    assert!(!err.contains("changed on disk"), "{err}");
    assert!(ssh_ok(&lab, "s1", "journalctl -u app -o cat").contains("version=two"));
    assert!(!ssh_ok(&lab, "s1", "systemctl status app").contains("changed on disk"));
}

#[test]
fn enable_reloads_the_manager_unless_no_reload() {
    let lab = Lab::builder().board("s1", Role::Server).start().unwrap();
    let unit = |v: &str| {
        format!("[Service]\nExecStart=/bin/sh -c 'echo version={v}; exec sleep 100000'\n[Install]\nWantedBy=multi-user.target\n")
    };
    write_unit(&lab, "s1", "app.service", &unit("one"));
    ssh_ok(&lab, "s1", "systemctl enable --now app");
    let need = || ssh_ok(&lab, "s1", "systemctl show app -p NeedDaemonReload --value");
    assert_eq!(need(), "no\n");
    write_unit(&lab, "s1", "app.service", &unit("two"));
    assert_eq!(need(), "yes\n");
    let reloads = lab.b("s1").daemon_reloads();
    // --no-reload: the links only, the manager keeps the old definition.
    ssh_ok(&lab, "s1", "systemctl enable --no-reload app");
    assert_eq!(need(), "yes\n");
    assert_eq!(lab.b("s1").daemon_reloads(), reloads);
    // Already enabled (no link made): the enable still reloads, as systemctl-enable.c does.
    ssh_ok(&lab, "s1", "systemctl enable app");
    assert_eq!(need(), "no\n");
    assert_eq!(lab.b("s1").daemon_reloads(), reloads + 1);
    ssh_ok(&lab, "s1", "systemctl restart app");
    assert!(ssh_ok(&lab, "s1", "journalctl -u app -o cat").contains("version=two"));
}

#[test]
fn restart_always_brings_a_crashed_service_back() {
    let lab = Lab::builder().board("s1", Role::Server).start().unwrap();
    write_unit(
        &lab,
        "s1",
        "crashy.service",
        "[Service]\nExecStart=/bin/sh -c 'echo up; sleep 0.2; exit 3'\nRestart=always\nRestartSec=100ms\n",
    );
    ssh_ok(&lab, "s1", "systemctl start crashy");
    wait_for("two automatic restarts", || {
        lab.b("s1")
            .service_starts("crashy")
            .iter()
            .filter(|s| s.kind == StartKind::AutoRestart)
            .count()
            >= 2
    });
    let n: u32 = ssh_ok(&lab, "s1", "systemctl show crashy -p NRestarts --value")
        .trim()
        .parse()
        .unwrap();
    assert!(n >= 2);
    assert!(
        lab.b("s1")
            .journal("crashy")
            .contains("Scheduled restart job, restart counter is at")
    );
    ssh_ok(&lab, "s1", "systemctl stop crashy");
    let after = lab.b("s1").service_starts("crashy").len();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(lab.b("s1").service_starts("crashy").len(), after);
    assert_eq!(
        ssh(&lab, "s1", "systemctl is-active crashy").1,
        "inactive\n"
    );
}

#[test]
fn type_notify_start_waits_for_ready() {
    let lab = Lab::builder().board("s1", Role::Server).start().unwrap();
    write_unit(
        &lab,
        "s1",
        "ready.service",
        "[Service]\nType=notify\nExecStart=/bin/sh -c 'sleep 3; echo ok > /run/ready-marker; echo READY=1 | socat -u - UNIX-SENDTO:$NOTIFY_SOCKET; exec sleep 100000'\n",
    );
    let t = std::time::Instant::now();
    ssh_ok(
        &lab,
        "s1",
        "systemctl start ready && cat /run/ready-marker && systemctl is-active ready",
    );
    assert!(t.elapsed() >= std::time::Duration::from_secs(3));
    assert!(lab.b("s1").path("/run/ready-marker").exists());

    write_unit(
        &lab,
        "s1",
        "never.service",
        "[Service]\nType=notify\nExecStart=/bin/sh -c 'exit 4'\n",
    );
    let (code, _, err) = ssh(&lab, "s1", "systemctl start never");
    assert_eq!(code, 1, "{err}");
    assert_eq!(ssh(&lab, "s1", "systemctl is-active never").1, "failed\n");
}
