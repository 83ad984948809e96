//! Small helpers shared by every module: time stamps, random names, sha256, logging lines.
//! Owns no state and touches no files.
use sha2::{Digest, Sha256};
use std::time::{SystemTime, UNIX_EPOCH};

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// RFC 3339 UTC timestamp with second precision, as Kubernetes prints `metav1.Time`.
pub fn rfc3339(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let days = secs.div_euclid(86400);
    let sod = secs.rem_euclid(86400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", sod / 3600, (sod % 3600) / 60, sod % 60)
}

/// RFC 3339 UTC with milliseconds, e.g. `2025-01-02T03:04:05.678Z` (the audit log's time).
pub fn rfc3339_ms(ms: u64) -> String {
    let base = rfc3339(ms);
    format!("{}.{:03}Z", &base[..base.len() - 1], ms % 1000)
}

/// Same with microseconds, as containerd/k3s logs print them.
pub fn log_time(ms: u64) -> String {
    let base = rfc3339(ms);
    format!("{}.{:03}000000Z", &base[..base.len() - 1], ms % 1000)
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Kubernetes' alphabet for generated name suffixes (no vowels, no confusable digits).
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        if f.read_exact(&mut buf).is_ok() {
            return buf;
        }
    }
    let seed = now_ms() ^ (std::process::id() as u64) << 20;
    sha2::Sha256::digest(seed.to_le_bytes())[..n.min(32)].to_vec()
}

pub fn random_hex(n_bytes: usize) -> String {
    hex::encode(random_bytes(n_bytes))
}

/// A random suffix like the ones the apiserver's generateName produces (5 chars).
pub fn random_suffix(len: usize) -> String {
    random_bytes(len).iter().map(|b| ALPHANUMS[*b as usize % ALPHANUMS.len()] as char).collect()
}

/// A ReplicaSet's pod-template-hash as the deployment controller makes it: the 32-bit FNV-1a hash
/// of the pod template, written in decimal, each digit mapped through the alphabet
/// (apimachinery's `rand.SafeEncodeString`). So only `456789bcdf` appear, and it is at most 10
/// characters long.
pub fn template_hash(seed: &str) -> String {
    let h = seed.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    h.to_string().bytes().map(|d| ALPHANUMS[d as usize % ALPHANUMS.len()] as char).collect()
}

/// A log line in the logrus format k3s uses (`time="..." level=info msg="..."`), to stderr,
/// which the lab's systemctl emulation captures for `journalctl -u`.
pub fn log(level: &str, msg: &str) {
    eprintln!("time=\"{}\" level={} msg={:?}", log_time(now_ms()), level, msg);
}

/// Write a file atomically with the given mode (secrets: 0o600).
pub fn write_file(path: &std::path::Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, data)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000_000), "2023-11-14T22:13:20Z");
    }
    #[test]
    fn suffix_alphabet() {
        let s = random_suffix(5);
        assert_eq!(s.len(), 5);
        assert!(s.bytes().all(|b| ALPHANUMS.contains(&b)));
        assert_eq!(template_hash("x"), template_hash("x"));
        // FNV-1a of nothing is its offset basis, 2166136261.
        assert_eq!(template_hash(""), "65bb57b6b5");
        assert!(template_hash("a pod template").bytes().all(|b| b"456789bcdf".contains(&b)));
    }
}
