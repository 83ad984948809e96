//! A real docker-registry with htpasswd (bcrypt) auth and/or TLS from our own CA.

#[path = "../fixtures/images/gen.rs"]
mod images;
#[path = "support/registry.rs"]
mod support;

use std::sync::mpsc;

use images::Layer;
use rvcluster::registry::push;
use rvcluster::registry::{ClientOptions, Credentials, PushItem, RegistryClient, RegistryError, RemoteSources, Source, load};
use support::{Opts, TestRegistry};

fn one_item(work: &std::path::Path, repo: &str) -> (PushItem, String) {
    let tar = work.join("img.tar");
    let w = images::oci_archive(work, &tar, &["riscv64"], &[Layer::new("l", 50_000, 3)]);
    let image = load(&Source::OciArchive(tar), &RemoteSources::default()).unwrap();
    (PushItem { name: repo.into(), image, repository: repo.into(), tag: Some("1".into()), locked_manifest_digest: None }, w.manifest("riscv64").to_string())
}

#[test]
fn with_auth_anonymous_push_is_refused_and_credentials_work() {
    let reg = TestRegistry::start(Opts { auth: true, ..Default::default() });
    let work = tempfile::tempdir().unwrap();
    let (it, digest) = one_item(work.path(), "riscv64/secret");
    let (tx, _rx) = mpsc::channel();

    let anon = RegistryClient::new(&reg.endpoint(), ClientOptions::default()).unwrap();
    let err = push::plan_and_push(&anon, std::slice::from_ref(&it), &[], &tx).unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { status: 401, .. }), "{err}");
    assert!(err.to_string().contains("no credentials are configured"), "{err}");

    let wrong = ClientOptions { credentials: Some(Credentials { username: "rvc".into(), password: "wrong-pw".into() }), ..Default::default() };
    let err = RegistryClient::new(&reg.endpoint(), wrong).unwrap().ping().unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    assert!(!err.to_string().contains("wrong-pw"), "errors never show the password: {err}");

    let good = RegistryClient::new(&reg.endpoint(), reg.client_options()).unwrap();
    let (_, report) = push::plan_and_push(&good, std::slice::from_ref(&it), &[], &tx).unwrap();
    assert_eq!(report.images[0].manifest_digest, digest);
    let v = reg.skopeo_inspect("riscv64/secret", "1").unwrap();
    assert_eq!(v["Digest"], digest.as_str());
    // skopeo without credentials is refused too.
    let e = reg.skopeo_inspect_with("riscv64/secret", "1", false).unwrap_err();
    assert!(e.contains("unauthorized") || e.contains("401") || e.contains("authentication required"), "{e}");
}

#[test]
fn with_tls_the_ca_file_is_used_and_skopeo_verifies_with_it() {
    let reg = TestRegistry::start(Opts { auth: true, tls: true, ..Default::default() });
    assert!(reg.endpoint().starts_with("https://"));
    let work = tempfile::tempdir().unwrap();
    let (it, digest) = one_item(work.path(), "riscv64/tls");
    let (tx, _rx) = mpsc::channel();

    // Without our CA the server is not trusted.
    let no_ca = ClientOptions { credentials: reg.credentials(), ..Default::default() };
    let err = RegistryClient::new(&reg.endpoint(), no_ca).unwrap().ping().unwrap_err();
    assert!(matches!(err, RegistryError::Tls { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("UnknownIssuer") && msg.contains("needs its CA file"), "{msg}");

    let client = RegistryClient::new(&reg.endpoint(), reg.client_options()).unwrap();
    client.ping().unwrap();
    let (_, report) = push::plan_and_push(&client, std::slice::from_ref(&it), &[], &tx).unwrap();
    assert_eq!(report.images[0].manifest_digest, digest);
    // skopeo with --cert-dir (the CA only) verifies the chain and sees the digest.
    let v = reg.skopeo_inspect("riscv64/tls", "1").unwrap();
    assert_eq!(v["Digest"], digest.as_str());

    // A CA file that holds no certificate is a clear setup error.
    let bogus = work.path().join("bogus.pem");
    std::fs::write(&bogus, "not a pem\n").unwrap();
    let err = RegistryClient::new(&reg.endpoint(), ClientOptions { ca_file: Some(bogus), ..Default::default() }).unwrap_err();
    assert!(err.to_string().contains("holds no PEM certificate"), "{err}");
}

#[test]
fn bearer_token_flow_against_a_token_auth_registry() {
    let reg = TestRegistry::start(Opts { token: true, ..Default::default() });
    let work = tempfile::tempdir().unwrap();
    let (it, digest) = one_item(work.path(), "riscv64/token");
    let other = load(&Source::OciArchive(work.path().join("img.tar")), &RemoteSources::default()).unwrap();
    let it2 = PushItem { name: "second".into(), image: other, repository: "riscv64/token2".into(), tag: Some("1".into()), locked_manifest_digest: None };
    let (tx, _rx) = mpsc::channel();

    // Anonymous: the registry challenges with Bearer, the token server refuses without credentials.
    let anon = RegistryClient::new(&reg.endpoint(), ClientOptions::default()).unwrap();
    let err = push::plan_and_push(&anon, std::slice::from_ref(&it), &[], &tx).unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    assert_eq!(reg.tokens_issued(), 0);

    // With credentials: tokens per scope, the push and a cross-repository mount both work.
    let client = RegistryClient::new(&reg.endpoint(), reg.client_options()).unwrap();
    let items = [it, it2];
    let (plan, report) = push::plan_and_push(&client, &items, &[], &tx).unwrap_or_else(|e| panic!("{e}\n{}", reg.log()));
    assert!(reg.tokens_issued() >= 2, "a token per scope");
    assert_eq!(report.images[0].manifest_digest, digest);
    assert!(plan.images[1].blobs.iter().all(|b| matches!(b.action, push::BlobAction::Mount { .. })));
    assert_eq!(report.images[1].mounted, 2);
    let v = reg.skopeo_inspect("riscv64/token2", "1").unwrap();
    assert_eq!(v["Digest"], digest.as_str());
}

#[test]
fn one_client_shared_by_threads_under_token_auth() {
    let reg = TestRegistry::start(Opts { token: true, ..Default::default() });
    let client = RegistryClient::new(&reg.endpoint(), reg.client_options()).unwrap();
    let works: Vec<(tempfile::TempDir, String)> = (0..3).map(|i| (tempfile::tempdir().unwrap(), format!("riscv64/shared{i}"))).collect();
    let results: Vec<(String, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = works
            .iter()
            .enumerate()
            .map(|(i, (dir, repo))| {
                let client = &client;
                s.spawn(move || {
                    let tar = dir.path().join("img.tar");
                    images::oci_archive(dir.path(), &tar, &["riscv64"], &[Layer::new("l", 40_000, 50 + i as u64)]);
                    let image = load(&Source::OciArchive(tar), &RemoteSources::default()).unwrap();
                    let items = [PushItem { name: repo.clone(), image, repository: repo.clone(), tag: Some("1".into()), locked_manifest_digest: None }];
                    let (tx, _rx) = mpsc::channel();
                    let (_, rep) = push::plan_and_push(client, &items, &[], &tx).unwrap_or_else(|e| panic!("{repo}: {e}"));
                    (repo.clone(), rep.images[0].manifest_digest.clone())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (repo, digest) in results {
        assert_eq!(reg.skopeo_inspect(&repo, "1").unwrap()["Digest"], digest.as_str());
    }
}
