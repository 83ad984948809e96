//! The manifests directory and upgrades: files applied at runtime, edits roll pods, deleting a
//! file leaves its objects, `.skip` keeps a user's copy of a packaged file, deleted pods come
//! back under a new name, and a new k3s version rewrites the packaged addons.
mod common;
use common::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);

fn deploy(name: &str, image: &str) -> String {
    format!("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: apps\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      containers:\n      - name: {name}\n        image: {image}\n")
}

fn pod_names(n: &SimNode, prefix: &str) -> Vec<String> {
    n.pods().iter().filter_map(|p| p["metadata"]["name"].as_str()).filter(|x| x.starts_with(prefix)).map(str::to_string).collect()
}

#[test]
fn manifests_are_applied_live_edits_roll_pods_and_deleting_a_file_keeps_objects() {
    let up = Registry::start();
    let mirror = Registry::start();
    k3s_sim::upstream::seed(&up.url()).unwrap();
    port_to_riscv(&mirror, &["rancher/mirrored-pause:3.6", "rancher/mirrored-coredns-coredns:1.12.3", "rancher/mirrored-coredns-coredns:1.13.1", "rancher/local-path-provisioner:v0.0.31"], "");
    let mut srv = SimNode::new("srv-manifests", &up);
    srv.write("/etc/rancher/k3s/config.yaml", "disable: [traefik, metrics-server]\n");
    srv.write("/etc/rancher/k3s/registries.yaml", &format!("mirrors:\n  docker.io:\n    endpoint: [\"http://{}\"]\n", mirror.authority()));
    srv.start_server(&[]);
    let m = "/var/lib/rancher/k3s/server/manifests";
    srv.write(&format!("{m}/redis.yaml"), &deploy("redis", "riscv64/redis:latest"));
    let first = wait_until("redis Ready (applied without restart)", WAIT, || {
        let p = srv.pods();
        pod_named(&p, "redis-").filter(|x| is_ready(x)).map(|x| x["metadata"]["name"].as_str().unwrap().to_string())
    });
    // edit: a new template replaces the pod
    srv.write(&format!("{m}/redis.yaml"), &deploy("redis", "riscv64/redis:7.2.4"));
    let second = wait_until("redis pod replaced", WAIT, || {
        let names = pod_names(&srv, "redis-");
        (names.len() == 1 && names[0] != first).then(|| names[0].clone())
    });
    let p = srv.pods();
    let pod = pod_named(&p, &second).unwrap();
    assert_eq!(pod["spec"]["containers"][0]["image"], "riscv64/redis:7.2.4");
    // riscv64/redis:7.2.4 does not exist anywhere: not found, not a platform problem
    let msg = wait_until("redis:7.2.4 pull failure", WAIT, || {
        let p = srv.pods();
        pod_named(&p, &second).and_then(|x| x["status"]["containerStatuses"][0]["state"]["waiting"]["message"].as_str().map(str::to_string))
    });
    assert!(msg.contains("docker.io/riscv64/redis:7.2.4: not found"), "{msg}");
    // deleting the file leaves the objects
    std::fs::remove_file(srv.path(&format!("{m}/redis.yaml"))).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(pod_names(&srv, "redis-"), vec![second.clone()]);
    // a deleted pod of a Deployment comes back under a new name
    let core = wait_until("coredns Ready", WAIT, || {
        let p = srv.pods();
        pod_named(&p, "coredns-").filter(|x| is_ready(x)).map(|x| x["metadata"]["name"].as_str().unwrap().to_string())
    });
    let (code, out, _) = srv.kubectl(&["-n", "kube-system", "delete", "pod", &core]);
    assert_eq!((code, out), (0, format!("pod \"{core}\" deleted\n")));
    wait_until("coredns recreated", WAIT, || {
        let names = pod_names(&srv, "coredns-");
        (names.len() == 1 && names[0] != core).then_some(())
    });
    // .skip: k3s no longer rewrites coredns.yaml; a user's edit survives a restart
    let cpath = format!("{m}/coredns.yaml");
    let edited = srv.read(&cpath).replace("mirrored-coredns-coredns:1.12.3", "mirrored-coredns-coredns:1.13.1");
    srv.write(&cpath, &edited);
    srv.write(&format!("{m}/coredns.yaml.skip"), "");
    srv.restart_server(&[]);
    assert!(srv.read(&cpath).contains("1.13.1"));
    // an upgrade: the new version rewrites packaged addons (local-path-provisioner v0.0.32)
    let conf = srv.read("/etc/rvlab/sim.conf");
    srv.write("/etc/rvlab/sim.conf", &format!("{conf}k3s-version v1.34.3+k3s1\n"));
    srv.restart_server(&[]);
    let nodes = srv.json(&["get", "nodes"]);
    assert_eq!(nodes["items"][0]["status"]["nodeInfo"]["kubeletVersion"], "v1.34.3+k3s1");
    let p = wait_until("local-path-provisioner v0.0.32 (has riscv64 upstream) Ready", WAIT, || {
        let p = srv.pods();
        pod_named(&p, "local-path-provisioner-").filter(|x| x["spec"]["containers"][0]["image"] == "rancher/local-path-provisioner:v0.0.32" && is_ready(x)).cloned()
    });
    assert_eq!(p["status"]["containerStatuses"][0]["image"], "docker.io/rancher/local-path-provisioner:v0.0.32");
    assert!(srv.read(&cpath).contains("1.13.1"), "skipped file untouched by the upgrade");
}

#[test]
fn init_containers_run_first_and_their_pull_failures_show_as_init_status() {
    let up = Registry::start();
    let mirror = Registry::start();
    k3s_sim::upstream::seed(&up.url()).unwrap();
    port_to_riscv(&mirror, &["rancher/mirrored-pause:3.6"], "");
    let mut srv = SimNode::new("srv-init", &up);
    srv.write("/etc/rancher/k3s/config.yaml", "disable: [traefik, metrics-server, local-storage, coredns]\n");
    srv.write("/etc/rancher/k3s/registries.yaml", &format!("mirrors:\n  docker.io:\n    endpoint: [\"http://{}\"]\n", mirror.authority()));
    let with_init = |name: &str, init_image: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  initContainers:\n  - name: prepare\n    image: {init_image}\n  containers:\n  - name: app\n    image: riscv64/redis:latest\n")
    };
    srv.write("/var/lib/rancher/k3s/server/manifests/good.yaml", &with_init("good", "busybox:latest"));
    srv.write("/var/lib/rancher/k3s/server/manifests/bad.yaml", &with_init("bad", "nginx:latest"));
    srv.start_server(&[]);
    let pods = wait_until("good Ready and bad stuck in init", WAIT, || {
        let p = srv.pods();
        let good = pod_named(&p, "good").is_some_and(is_ready);
        let bad = pod_named(&p, "bad").and_then(|b| b["status"]["initContainerStatuses"][0]["state"]["waiting"]["reason"].as_str().map(str::to_string));
        (good && bad.as_deref() == Some("ImagePullBackOff")).then_some(p)
    });
    let good = pod_named(&pods, "good").unwrap();
    assert_eq!(good["status"]["initContainerStatuses"][0]["state"]["terminated"]["reason"], "Completed");
    assert_eq!(good["spec"]["initContainers"][0]["image"], "busybox:latest");
    let bad = pod_named(&pods, "bad").unwrap();
    assert_eq!(bad["status"]["phase"], "Pending");
    assert_eq!(bad["status"]["containerStatuses"][0]["state"]["waiting"]["reason"], "PodInitializing");
    let msg = bad["status"]["initContainerStatuses"][0]["state"]["waiting"]["message"].as_str().unwrap();
    assert!(msg.contains("failed to pull and unpack image \"docker.io/library/nginx:latest\": no match for platform in manifest: not found"), "{msg}");
    let init = bad["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Initialized").unwrap();
    assert_eq!((init["status"].as_str(), init["reason"].as_str()), (Some("False"), Some("ContainersNotInitialized")));
    let (_, table, _) = srv.kubectl(&["get", "pods"]);
    // (a retry in progress shows Init:ErrImagePull for a moment)
    assert!(table.lines().any(|l| l.starts_with("bad ") && (l.contains("Init:ImagePullBackOff") || l.contains("Init:ErrImagePull"))), "{table}");
    assert!(table.lines().any(|l| l.starts_with("good ") && l.contains("1/1") && l.contains("Running")), "{table}");
}
