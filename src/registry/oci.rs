//! OCI / Docker v2 manifest and index documents: just enough typed parsing to walk an image
//! (index -> platform manifest -> config + layers). Manifests are always kept as their original
//! bytes elsewhere; these types are read-only views and are never serialized back.

use serde::{Deserialize, Serialize};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Accept header for manifest requests: every type we can walk.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

pub const RISCV64: &str = "linux/riscv64";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    pub fn is_riscv64(&self) -> bool {
        self.os == "linux" && self.architecture == "riscv64"
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Index {
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// The platform fields of an image config blob.
#[derive(Debug, Clone, Deserialize)]
pub struct ConfigPlatform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl ConfigPlatform {
    pub fn platform(&self) -> Platform {
        Platform { os: self.os.clone(), architecture: self.architecture.clone(), variant: self.variant.clone() }
    }
}

pub fn is_index_type(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

/// What a manifest document is, from its declared media type (header or descriptor) or its shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Index,
    Manifest,
}

/// Why a manifest document could not be read.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("not JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("unsupported media type `{0}`")]
    UnsupportedMediaType(String),
    #[error("neither an image index nor an image manifest")]
    UnknownShape,
    #[error("invalid image manifest: {0}")]
    Manifest(serde_json::Error),
    #[error("invalid image index: {0}")]
    Index(serde_json::Error),
}

pub fn kind_of(bytes: &[u8], declared: Option<&str>) -> Result<Kind, OciError> {
    if let Some(mt) = declared.filter(|m| !m.is_empty()) {
        if is_index_type(mt) {
            return Ok(Kind::Index);
        }
        if mt == OCI_MANIFEST || mt == DOCKER_MANIFEST {
            return Ok(Kind::Manifest);
        }
    }
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(OciError::NotJson)?;
    if let Some(mt) = v.get("mediaType").and_then(|m| m.as_str()) {
        if is_index_type(mt) {
            return Ok(Kind::Index);
        }
        if mt == OCI_MANIFEST || mt == DOCKER_MANIFEST {
            return Ok(Kind::Manifest);
        }
        return Err(OciError::UnsupportedMediaType(mt.to_string()));
    }
    if v.get("manifests").is_some() {
        Ok(Kind::Index)
    } else if v.get("config").is_some() {
        Ok(Kind::Manifest)
    } else {
        Err(OciError::UnknownShape)
    }
}

/// The media type to send with a manifest PUT: the document's own, else the OCI default for its kind.
pub fn media_type_of(bytes: &[u8], kind: Kind) -> String {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v.get("mediaType").and_then(|m| m.as_str()).map(String::from))
        .unwrap_or_else(|| match kind {
            Kind::Index => OCI_INDEX.to_string(),
            Kind::Manifest => OCI_MANIFEST.to_string(),
        })
}

pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, OciError> {
    serde_json::from_slice(bytes).map_err(OciError::Manifest)
}

pub fn parse_index(bytes: &[u8]) -> Result<Index, OciError> {
    serde_json::from_slice(bytes).map_err(OciError::Index)
}

/// Picks the linux/riscv64 entry of an index, skipping attestation manifests (`unknown/unknown`).
/// Err carries the platforms the index does have, for the error message.
pub fn select_riscv64(index: &Index) -> Result<&Descriptor, Vec<String>> {
    index
        .manifests
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(Platform::is_riscv64))
        .ok_or_else(|| platforms_of(index))
}

pub fn platforms_of(index: &Index) -> Vec<String> {
    let mut v: Vec<String> = index
        .manifests
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .filter(|p| p.os != "unknown")
        .map(|p| p.to_string())
        .collect();
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
      {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:aa","size":1,"platform":{"os":"linux","architecture":"amd64"}},
      {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:bb","size":2,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
      {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:cc","size":3,"platform":{"os":"unknown","architecture":"unknown"}}]}"#;

    #[test]
    fn index_without_riscv64_lists_real_platforms_only() {
        let idx = parse_index(INDEX.as_bytes()).unwrap();
        assert_eq!(select_riscv64(&idx).unwrap_err(), vec!["linux/amd64", "linux/arm64/v8"]);
        assert_eq!(kind_of(INDEX.as_bytes(), None).unwrap(), Kind::Index);
    }

    #[test]
    fn selects_riscv64() {
        let s = INDEX.replace("arm64\",\"variant\":\"v8\"", "riscv64\"");
        let idx = parse_index(s.as_bytes()).unwrap();
        assert_eq!(select_riscv64(&idx).unwrap().digest, "sha256:bb");
    }

    #[test]
    fn kind_from_shape_and_declared_type() {
        let m = br#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:a","size":1},"layers":[]}"#;
        assert_eq!(kind_of(m, None).unwrap(), Kind::Manifest);
        assert_eq!(kind_of(m, Some(DOCKER_LIST)).unwrap(), Kind::Index);
        assert_eq!(media_type_of(m, Kind::Manifest), OCI_MANIFEST);
        assert!(kind_of(br#"{"mediaType":"text/plain"}"#, None).is_err());
    }
}
