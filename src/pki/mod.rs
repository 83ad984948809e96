//! The registry's TLS material when `tls #true` names no certificate: a CA and a server
//! certificate for the registry's address, generated once and kept beside cluster.kdl under
//! `.rvcluster/` (keys mode 0600) so every apply uses the same ones. Local files only.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};

use crate::spec::Cluster;

pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn dir(c: &Cluster) -> PathBuf {
    c.base_dir.join(".rvcluster")
}

/// Why the registry's TLS material could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("creating {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("writing {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{}: {source}", path.display())]
    Permissions { path: PathBuf, source: std::io::Error },
    #[error("generating the registry certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

fn write(p: &Path, text: &str, mode: u32) -> Result<(), PkiError> {
    let tmp = p.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| PkiError::Write { path: tmp.clone(), source: e })?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(|e| PkiError::Permissions { path: tmp.clone(), source: e })?;
    std::fs::rename(&tmp, p).map_err(|e| PkiError::Write { path: p.to_path_buf(), source: e })
}

/// Makes (or reuses) the CA and server certificate for `address`, and points the cluster's
/// registry at them. Does nothing unless `tls #true` without `cert=`.
pub fn ensure_registry_tls(c: &mut Cluster) -> Result<Option<TlsFiles>, PkiError> {
    let d = dir(c);
    let Some(r) = c.registry.as_mut() else { return Ok(None) };
    // An external registry serves its own certificate: nothing to make (ca= says whom to trust).
    if !r.tls.enabled || r.tls.cert.is_some() || r.external {
        return Ok(None);
    }
    let files = TlsFiles {
        ca: d.join("registry-ca.pem"),
        cert: d.join("registry.pem"),
        key: d.join("registry-key.pem"),
    };
    let ca_key_path = d.join("registry-ca-key.pem");
    let san_marker = d.join("registry.san");
    let same_san = std::fs::read_to_string(&san_marker).ok().as_deref() == Some(r.address.as_str());
    if !(files.ca.is_file() && files.cert.is_file() && files.key.is_file() && same_san) {
        std::fs::create_dir_all(&d).map_err(|e| PkiError::CreateDir { path: d.clone(), source: e })?;
        // The CA is kept when it exists (nodes already trust it); only the server cert is renewed.
        // The CA's parameters are deterministic, so an issuer rebuilt from them and the kept key
        // signs with the same subject as the CA certificate the nodes trust.
        let ca_params = || -> Result<CertificateParams, PkiError> {
            let mut p = CertificateParams::new(Vec::<String>::new())?;
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
            p.distinguished_name.push(DnType::CommonName, format!("rvcluster {} registry CA", c.name));
            Ok(p)
        };
        let ca_key = match (files.ca.is_file(), std::fs::read_to_string(&ca_key_path)) {
            (true, Ok(key)) => KeyPair::from_pem(&key)?,
            _ => {
                let key = KeyPair::generate()?;
                let cert = ca_params()?.self_signed(&key)?;
                write(&ca_key_path, &key.serialize_pem(), 0o600)?;
                write(&files.ca, &cert.pem(), 0o644)?;
                key
            }
        };
        let issuer = Issuer::new(ca_params()?, ca_key);
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.subject_alt_names = vec![match r.address.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(r.address.clone().try_into()?),
        }];
        p.distinguished_name.push(DnType::CommonName, r.address.clone());
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &issuer)?;
        write(&files.key, &key.serialize_pem(), 0o600)?;
        write(&files.cert, &cert.pem(), 0o644)?;
        write(&san_marker, &r.address, 0o644)?;
    }
    r.tls.ca = Some(files.ca.clone());
    r.tls.cert = Some(files.cert.clone());
    r.tls.key = Some(files.key.clone());
    Ok(Some(files))
}
