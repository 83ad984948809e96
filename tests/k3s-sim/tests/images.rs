//! Images that arrive without a registry pull: air-gap tarballs in agent/images (imported at
//! start and at runtime), and the blogs' manual workaround `crictl pull` + `ctr images tag`.
mod common;
use common::*;
use k3s_sim::upstream::{self, Format, ImageSpec, Platform};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);

fn riscv_only(repo: &str, tag: &str) -> upstream::BuiltImage {
    upstream::build(&ImageSpec { repository: repo.into(), tag: tag.into(), format: Format::OciIndex, platforms: vec![Platform::parse("linux/riscv64").unwrap()] })
}

#[test]
fn airgap_tarball_then_crictl_pull_and_ctr_tag_like_the_blog() {
    let up = Registry::start();
    let mirror = Registry::start();
    upstream::seed(&up.url()).unwrap();
    port_to_riscv(&mirror, &["riscv64/local-path-provisioner:1.1"], "");
    let mut srv = SimNode::new("srv-img", &up);
    srv.write("/etc/rancher/k3s/config.yaml", "disable: [traefik, metrics-server, coredns]\n");
    srv.write("/etc/rancher/k3s/registries.yaml", &format!("mirrors:\n  docker.io:\n    endpoint: [\"http://{}\"]\n", mirror.authority()));
    // k3s is not running yet: crictl cannot reach containerd
    let o = std::process::Command::new(K3S).args(["crictl", "pull", "busybox"]).env("RVLAB_SIM_TEST_ROOT", &srv.root).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("containerd.sock"), "{}", String::from_utf8_lossy(&o.stderr));
    // an unsupported compression is reported, a tarball without riscv64 is refused
    srv.write("/var/lib/rancher/k3s/agent/images/other.tar.lz4", "x");
    std::fs::write(srv.path("/var/lib/rancher/k3s/agent/images/amd64-pause.tar"), upstream::oci_archive(&upstream::build(&ImageSpec {
        repository: "rancher/mirrored-pause".into(), tag: "3.6".into(), format: Format::OciIndex, platforms: vec![Platform::parse("linux/amd64").unwrap()],
    }))).unwrap();
    srv.start_server(&[]);
    let lpp = wait_until("local-path-provisioner stuck without a sandbox", WAIT, || {
        let p = srv.pods();
        pod_named(&p, "local-path-provisioner-").filter(|x| waiting_reason(x).as_deref() == Some("ContainerCreating")).cloned()
    });
    let log = srv.log();
    assert!(log.contains("other.tar.lz4: this compression is not supported"), "{log}");
    assert!(log.contains("Failed to import docker.io/rancher/mirrored-pause:3.6") && log.contains("no match for platform"), "{log}");
    // the air-gap tarball arrives while k3s runs: imported, the sandbox starts
    std::fs::write(srv.path("/var/lib/rancher/k3s/agent/images/pause.tar"), upstream::oci_archive(&riscv_only("rancher/mirrored-pause", "3.6"))).unwrap();
    let name = lpp["metadata"]["name"].as_str().unwrap().to_string();
    wait_until("local-path-provisioner in ImagePullBackOff after the sandbox", WAIT, || {
        let p = srv.pods();
        pod_named(&p, &name).and_then(waiting_reason).filter(|r| r == "ImagePullBackOff").map(|_| ())
    });
    // the blog: crictl pull the riscv64 port, retag it with the name the pod wants
    let (code, out, err) = cmd(&srv, &["crictl", "pull", "riscv64/local-path-provisioner:1.1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("Image is up to date for sha256:"), "{out}");
    let (code, out, err) = cmd(&srv, &["ctr", "-n", "k8s.io", "images", "tag", "docker.io/riscv64/local-path-provisioner:1.1", "docker.io/rancher/local-path-provisioner:v0.0.31"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "docker.io/rancher/local-path-provisioner:v0.0.31\n");
    let pod = wait_until("local-path-provisioner Ready with the retagged image", WAIT, || {
        let p = srv.pods();
        pod_named(&p, "local-path-provisioner-").filter(|x| is_ready(x)).cloned()
    });
    assert_eq!(pod["status"]["containerStatuses"][0]["image"], "docker.io/rancher/local-path-provisioner:v0.0.31");
    let (_, images, _) = cmd(&srv, &["crictl", "images"]);
    assert!(images.contains("docker.io/rancher/mirrored-pause") && images.contains("docker.io/riscv64/local-path-provisioner"), "{images}");
    // crictl uses what k3s read at start: a registries.yaml edit does not apply until restart
    srv.write("/etc/rancher/k3s/registries.yaml", "");
    let (code, _, err) = cmd(&srv, &["crictl", "pull", "riscv64/local-path-provisioner:1.1"]);
    assert_eq!(code, 0, "{err}");
}

fn cmd(n: &SimNode, args: &[&str]) -> (i32, String, String) {
    let o = std::process::Command::new(K3S).args(args).env("RVLAB_SIM_TEST_ROOT", &n.root).output().unwrap();
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

#[test]
fn imported_latest_images_are_still_pulled_with_the_default_always_policy() {
    let up = Registry::start();
    upstream::seed(&up.url()).unwrap();
    let mut srv = SimNode::new("srv-policy", &up);
    srv.write("/etc/rancher/k3s/config.yaml", "disable: [traefik, metrics-server, local-storage, coredns]\n");
    let img = |dir: &str, repo: &str, tag: &str| std::fs::write(srv.path(&format!("/var/lib/rancher/k3s/agent/images/{dir}")), upstream::oci_archive(&riscv_only(repo, tag))).unwrap();
    std::fs::create_dir_all(srv.path("/var/lib/rancher/k3s/agent/images")).unwrap();
    img("pause.tar", "rancher/mirrored-pause", "3.6");
    img("redis.tar", "library/redis", "latest");
    let pod = |name: &str, policy: &str| format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: redis\n    image: redis\n{policy}");
    srv.write("/var/lib/rancher/k3s/server/manifests/always.yaml", &pod("always", ""));
    srv.write("/var/lib/rancher/k3s/server/manifests/ifnotpresent.yaml", &pod("ifnotpresent", "    imagePullPolicy: IfNotPresent\n"));
    srv.start_server(&[]);
    let pods = wait_until("IfNotPresent Ready, Always failing to pull", WAIT, || {
        let p = srv.pods();
        let ok = pod_named(&p, "ifnotpresent").is_some_and(is_ready);
        let bad = pod_named(&p, "always").and_then(waiting_reason).is_some_and(|r| r == "ImagePullBackOff" || r == "ErrImagePull");
        (ok && bad).then_some(p)
    });
    let always = pod_named(&pods, "always").unwrap();
    assert_eq!(always["spec"]["containers"][0]["imagePullPolicy"], "Always");
    let msg = always["status"]["containerStatuses"][0]["state"]["waiting"]["message"].as_str().unwrap();
    assert!(msg.contains("\"docker.io/library/redis:latest\": no match for platform in manifest: not found"), "{msg}");
    assert_eq!(pod_named(&pods, "ifnotpresent").unwrap()["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent");
}
