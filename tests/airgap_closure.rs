//! The closure check and the pod diagnosis know where images come from: with no registry block an
//! `image` entry is provided as a tarball on every node, and the fix for a missing image says it
//! would be delivered as a tarball (never "push it to the registry"); a provided image that still
//! fails gets what to look at for its way of travelling. Upstream is a real, empty docker-registry.

#[path = "support/registry.rs"]
mod support;

use std::path::Path;

use rvcluster::profile::Profiles;
use rvcluster::spec::Cluster;
use support::{Opts, TestRegistry};

fn cluster(dir: &Path, upstream: &str, registry: &str) -> Cluster {
    let k3s = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/blog-lab/artifacts/k3s-riscv64");
    let text = format!(
        "cluster \"air\"\nupstream \"docker.io\" endpoint=\"{upstream}\"\n\
         k3s version=\"v1.33.4+k3s1\" {{\n    binary \"{}\" sha256=\"bf4e2dbaf8165b58064967a0bd45da6f17302b2e240cf4496e80229c9173409f\"\n    disable \"traefik\" \"metrics-server\" \"coredns\" \"local-storage\"\n}}\n\
         node \"s1\" address=\"10.0.0.1\" role=\"server\"\n{registry}\
         image \"docker.io/rancher/mirrored-pause:3.6\" from=\"docker://docker.io/rvlabports/mirrored-pause:3.6\"\n\
         image \"riscv64/busybox:latest\" from=\"docker://docker.io/rvlabports/busybox:1\"\n",
        k3s.display()
    );
    let file = dir.join("cluster.kdl");
    std::fs::write(&file, &text).unwrap();
    rvcluster::spec::parse(&file, &text, dir, &Profiles::builtin()).unwrap_or_else(|e| panic!("{}", e.lines().join("\n")))
}

#[test]
fn without_a_registry_tarballs_count_as_provided_and_the_fix_fits() {
    let up = TestRegistry::start(Opts::default());
    let dir = tempfile::tempdir().unwrap();
    let profiles = Profiles::builtin();
    let c = cluster(dir.path(), &up.endpoint(), "");
    assert_eq!(c.registry_mode().as_str(), "none");

    let report = rvcluster::images::closure(&c, &profiles, None);
    let text = report.render();
    let missing: Vec<&str> = report.missing().map(|e| e.image.as_str()).collect();
    assert_eq!(missing, ["docker.io/rancher/klipper-lb:v0.4.13"], "{text}");
    assert!(text.contains("ok       docker.io/rancher/mirrored-pause:3.6 (provided by cluster.kdl from docker://docker.io/rvlabports/mirrored-pause:3.6, delivered as a tarball to every node"), "{text}");

    // servicelb is not disabled: klipper-lb is nowhere, and the fix is a tarball, not a push.
    let lb = "docker.io/rancher/klipper-lb:v0.4.13";
    let text = rvcluster::images::explain(&c, &profiles, None, lb);
    assert!(text.contains(&format!("MISSING  {lb}")), "{text}");
    let fix = text.lines().find(|l| l.contains("fix:")).unwrap();
    assert!(fix.contains("delivered as a tarball to every node") && fix.contains("disable the addon `servicelb`"), "{fix}");
    assert!(!text.to_lowercase().contains("push"), "{text}");

    // A provided image that still fails: where it is and the :latest pull policy trap.
    let text = rvcluster::images::explain(&c, &profiles, None, "riscv64/busybox");
    assert!(text.contains("delivers it as a tarball in /var/lib/rancher/k3s/agent/images/ on every node"), "{text}");
    assert!(text.contains("rvcluster status") && text.contains("imagePullPolicy Always"), "{text}");

    // With an (external) registry the same image is pushed, and the fix has no tarball in it.
    let reg = TestRegistry::start(Opts::default());
    let block = format!("registry \"mac\" address=\"{}\" port={} external=#true {{\n    mirror \"docker.io\"\n}}\n", reg.ip, reg.port);
    let c = cluster(dir.path(), &up.endpoint(), &block);
    let text = rvcluster::images::explain(&c, &profiles, None, lb);
    let fix = text.lines().find(|l| l.contains("fix:")).unwrap();
    assert!(!fix.contains("tarball"), "{fix}");
    let text = rvcluster::images::explain(&c, &profiles, None, "docker.io/rancher/mirrored-pause:3.6");
    assert!(text.contains("pushed to the registry mac") && text.contains(&format!("check that the node reaches {}", reg.host_port())), "{text}");
}
