//! Property tests: the loader never panics, whatever the input, and always answers with either a
//! cluster or at least one located problem.

use std::path::Path;

use proptest::prelude::*;
use rvcluster::profile::Profiles;
use rvcluster::spec::reference::ImageRef;

fn fixture() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/blog-lab.kdl")).unwrap()
}

fn check(text: &str) {
    let profiles = Profiles::builtin();
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    match rvcluster::spec::parse(Path::new("fuzz.kdl"), text, &base, &profiles) {
        Ok(c) => assert!(!c.nodes.is_empty()),
        Err(e) => {
            assert!(!e.problems.is_empty(), "an error with no problem for {text:?}");
            for l in e.lines() {
                assert!(l.starts_with("fuzz.kdl:"), "{l}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,300}") {
        check(&s);
    }

    #[test]
    fn kdl_like_text_never_panics(s in r#"(cluster|k3s|node|registry|image|mirror|rewrite|disable|config|ssh|[a-z]{1,6}| |"[^"]{0,12}"|=|[0-9]{1,7}|#true|#false|#null|\{|\}|;|\n|//|/\*|\*/|\\){0,60}"#) {
        check(&s);
    }

    #[test]
    fn mutated_fixture_never_panics(pos in 0usize..4000, del in 0usize..40, ins in "\\PC{0,8}") {
        let f = fixture();
        let mut b: Vec<char> = f.chars().collect();
        let p = pos.min(b.len());
        let d = del.min(b.len() - p);
        b.splice(p..p + d, ins.chars());
        check(&b.into_iter().collect::<String>());
    }

    #[test]
    fn image_refs_never_panic_and_round_trip(s in "[a-zA-Z0-9._/:@-]{0,80}") {
        if let Ok(r) = ImageRef::parse(&s) {
            let again = ImageRef::parse(&r.to_string()).expect("a normalized reference parses again");
            prop_assert_eq!(again, r);
        }
    }
}

#[test]
fn the_unmutated_fixture_is_valid() {
    check(&fixture());
    let profiles = Profiles::builtin();
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    assert!(rvcluster::spec::parse(Path::new("x.kdl"), &fixture(), &base, &profiles).is_ok());
}
