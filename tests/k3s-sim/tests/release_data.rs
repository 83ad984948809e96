//! The simulator's per-release system images (src/release/releases.txt) must match the tool's
//! own profiles (profiles/k3s/*.kdl, written by the lead): otherwise the tool's closure check and
//! the pods the simulated k3s creates would disagree. Read with plain string matching (no
//! dependency on the tool's KDL format beyond `k3s-release "v"`, `pause "ref"`, `image "ref"`).
use std::collections::BTreeSet;

fn quoted(line: &str) -> Option<String> {
    let a = line.find('"')?;
    let b = line[a + 1..].find('"')?;
    Some(line[a + 1..a + 1 + b].to_string())
}

#[test]
fn system_images_match_the_tools_profiles() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../profiles/k3s");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let mut version = None;
        let mut profile = BTreeSet::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with("k3s-release ") {
                version = quoted(line);
            } else if line.starts_with("pause ") || line.starts_with("image ") {
                profile.insert(quoted(line).unwrap().trim_start_matches("docker.io/").to_string());
            }
        }
        let Some(version) = version else { continue };
        let rel = k3s_sim::release::for_version(&version);
        assert_eq!(rel.version, version);
        let sim: BTreeSet<String> = ["pause", "coredns", "local-storage", "local-storage-helper", "metrics-server", "helm", "traefik", "servicelb"]
            .iter()
            .map(|k| rel.get(k).to_string())
            .collect();
        assert_eq!(sim, profile, "k3s {version}: simulator data vs profiles/k3s");
        checked += 1;
    }
    assert!(checked >= 2, "profiles found: {checked}");
}
