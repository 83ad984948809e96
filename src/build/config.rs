//! The built image's config and manifest documents: the base's config (if any), the fields
//! `config-from` copies, then the declared fields; `created` and history fixed to the build's
//! epoch; everything serialized as canonical JSON (object keys sorted, no whitespace) so the same
//! inputs always give the same bytes.

use serde_json::{Map, Value, json};

use crate::registry::oci::{self, Descriptor};
use super::StepError;
use crate::spec::BuildConfig;

/// The fields `config-from` copies from the other platform's config.
pub const COPIED: &[&str] = &["Entrypoint", "Cmd", "Env", "User", "WorkingDir", "ExposedPorts"];

/// `created_by` of the history entry the build adds.
pub const CREATED_BY: &str = "rvcluster image build";

/// JSON with object keys sorted at every level and no insignificant whitespace.
pub fn canonical(v: &Value) -> Vec<u8> {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out.into_bytes()
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).expect("string serializes"));
                out.push(':');
                write_canonical(&m[k.as_str()], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        v => out.push_str(&serde_json::to_string(v).expect("scalar serializes")),
    }
}

/// RFC 3339 UTC time of a Unix epoch second (`1970-01-01T00:00:00Z` for 0).
pub fn rfc3339(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm, proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// What the config is built from.
pub struct Parts<'a> {
    /// The base image's config (linux/riscv64), None for scratch.
    pub base: Option<&'a [u8]>,
    /// The config `config-from` names (another platform's).
    pub from: Option<&'a [u8]>,
    pub declared: &'a BuildConfig,
    pub epoch: u64,
    /// diff_id of the layer the build adds, None when it adds none.
    pub added: Option<&'a str>,
}

/// The image config document (canonical JSON bytes).
pub fn image_config(p: &Parts) -> Result<Vec<u8>, StepError> {
    let created = rfc3339(p.epoch);
    let mut cfg: Map<String, Value> = match p.base {
        None => Map::new(),
        Some(b) => match serde_json::from_slice(b) {
            Ok(Value::Object(m)) => m,
            _ => return Err(StepError::BaseConfigNotObject),
        },
    };
    // What described the base's own build no longer describes this image.
    for k in ["container", "container_config", "docker_version", "variant", "os.version", "os.features"] {
        cfg.remove(k);
    }
    let mut inner = match cfg.remove("config") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    if let Some(from) = p.from {
        let other: Value = serde_json::from_slice(from).map_err(StepError::ConfigFrom)?;
        let other = other.get("config").and_then(Value::as_object).cloned().unwrap_or_default();
        for k in COPIED {
            match other.get(*k) {
                Some(v) if !v.is_null() => inner.insert(k.to_string(), v.clone()),
                _ => inner.remove(*k),
            };
        }
    }
    let d = p.declared;
    if let Some(ep) = &d.entrypoint {
        inner.insert("Entrypoint".into(), json!(ep));
        // As a Dockerfile's ENTRYPOINT does: a Cmd inherited from the base no longer applies.
        if d.cmd.is_none() && p.from.is_none() {
            inner.remove("Cmd");
        }
    }
    if let Some(cmd) = &d.cmd {
        inner.insert("Cmd".into(), json!(cmd));
    }
    if !d.env.is_empty() {
        let mut env: Vec<String> =
            inner.get("Env").and_then(Value::as_array).map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect()).unwrap_or_default();
        for (k, v) in &d.env {
            let line = format!("{k}={v}");
            match env.iter_mut().find(|e| e.split_once('=').map(|(ek, _)| ek) == Some(k.as_str()) || e.as_str() == k) {
                Some(slot) => *slot = line,
                None => env.push(line),
            }
        }
        inner.insert("Env".into(), json!(env));
    }
    if let Some(u) = &d.user {
        inner.insert("User".into(), json!(u));
    }
    if let Some(w) = &d.workdir {
        inner.insert("WorkingDir".into(), json!(w));
    }
    if !d.expose.is_empty() {
        let mut ports = inner.get("ExposedPorts").and_then(Value::as_object).cloned().unwrap_or_default();
        for port in &d.expose {
            ports.insert(port.clone(), json!({}));
        }
        inner.insert("ExposedPorts".into(), Value::Object(ports));
    }
    if !d.labels.is_empty() {
        let mut labels = inner.get("Labels").and_then(Value::as_object).cloned().unwrap_or_default();
        for (k, v) in &d.labels {
            labels.insert(k.clone(), json!(v));
        }
        inner.insert("Labels".into(), Value::Object(labels));
    }
    let mut diff_ids: Vec<Value> = match cfg.get("rootfs").and_then(|r| r.get("diff_ids")) {
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err(StepError::BadDiffIds),
        None if p.base.is_some() => return Err(StepError::NoDiffIds),
        None => Vec::new(),
    };
    let mut history: Vec<Value> = cfg.get("history").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut entry = json!({ "created": created, "created_by": CREATED_BY });
    match p.added {
        Some(d) => diff_ids.push(json!(d)),
        None => entry["empty_layer"] = json!(true),
    }
    history.push(entry);
    cfg.insert("architecture".into(), json!("riscv64"));
    cfg.insert("os".into(), json!("linux"));
    cfg.insert("created".into(), json!(created));
    cfg.insert("config".into(), Value::Object(inner));
    cfg.insert("rootfs".into(), json!({ "type": "layers", "diff_ids": diff_ids }));
    cfg.insert("history".into(), Value::Array(history));
    Ok(canonical(&Value::Object(cfg)))
}

/// The OCI media type a base layer keeps in our OCI manifest (same bytes, OCI name).
pub fn oci_layer_type(media_type: &str) -> Result<&'static str, StepError> {
    Ok(match media_type {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" | "application/vnd.oci.image.layer.v1.tar+gzip" => {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        }
        "application/vnd.oci.image.layer.v1.tar+zstd" => "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar" | "application/vnd.oci.image.layer.v1.tar" => oci::OCI_LAYER_TAR,
        other => return Err(StepError::LayerType(other.to_string())),
    })
}

/// The OCI image manifest (canonical JSON bytes).
pub fn manifest(config: &Descriptor, layers: &[Descriptor]) -> Vec<u8> {
    let layers: Vec<Value> =
        layers.iter().map(|l| json!({ "mediaType": l.media_type, "digest": l.digest, "size": l.size })).collect();
    canonical(&json!({
        "schemaVersion": 2,
        "mediaType": oci::OCI_MANIFEST,
        "config": { "mediaType": oci::OCI_CONFIG, "digest": config.digest, "size": config.size },
        "layers": layers,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_epochs() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v = json!({"b": 1, "a": {"d": [1, {"z": 0, "y": "é"}], "c": null}});
        assert_eq!(String::from_utf8(canonical(&v)).unwrap(), r#"{"a":{"c":null,"d":[1,{"y":"é","z":0}]},"b":1}"#);
    }

    #[test]
    fn declared_fields_override_copied_ones_which_override_the_base() {
        let base = br#"{"architecture":"riscv64","os":"linux","config":{"Cmd":["sh"],"Env":["PATH=/bin","A=1"],"User":"0"},"rootfs":{"type":"layers","diff_ids":["sha256:aa"]},"history":[{"created_by":"base"}],"container_config":{"x":1}}"#;
        let from = br#"{"architecture":"amd64","config":{"Entrypoint":["/app"],"Cmd":["--serve"],"Env":["PATH=/usr/bin"],"ExposedPorts":{"80/tcp":{}}}}"#;
        let declared = BuildConfig { env: vec![("A".into(), "2".into())], expose: vec!["53/udp".into()], ..Default::default() };
        let cfg = image_config(&Parts { base: Some(base), from: Some(from), declared: &declared, epoch: 0, added: Some("sha256:bb") }).unwrap();
        let v: Value = serde_json::from_slice(&cfg).unwrap();
        assert_eq!(v["config"]["Entrypoint"], json!(["/app"]));
        assert_eq!(v["config"]["Cmd"], json!(["--serve"]));
        assert_eq!(v["config"]["Env"], json!(["PATH=/usr/bin", "A=2"]), "copied, then the declared key replaced");
        assert!(v["config"].get("User").is_none(), "the other platform has no User: copied as absent");
        assert_eq!(v["config"]["ExposedPorts"], json!({"53/udp": {}, "80/tcp": {}}));
        assert_eq!(v["rootfs"]["diff_ids"], json!(["sha256:aa", "sha256:bb"]));
        assert_eq!(v["architecture"], "riscv64");
        assert_eq!(v["created"], "1970-01-01T00:00:00Z");
        assert!(v.get("container_config").is_none());
        assert_eq!(v["history"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn a_declared_entrypoint_drops_the_base_cmd_like_a_dockerfile() {
        let base = br#"{"config":{"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let declared = BuildConfig { entrypoint: Some(vec!["/pause".into()]), ..Default::default() };
        let cfg = image_config(&Parts { base: Some(base), from: None, declared: &declared, epoch: 0, added: None }).unwrap();
        let v: Value = serde_json::from_slice(&cfg).unwrap();
        assert!(v["config"].get("Cmd").is_none());
        assert_eq!(v["history"][0]["empty_layer"], true);
    }
}
