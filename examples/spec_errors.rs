//! Prints `file:line:col: message` for each problem in the given cluster files (a debugging aid for
//! writing fixtures/invalid/*.expected).
fn main() {
    let profiles = rvcluster::profile::Profiles::builtin();
    for f in std::env::args().skip(1) {
        match rvcluster::spec::load(std::path::Path::new(&f), &profiles) {
            Ok(_) => println!("{f}: OK"),
            Err(e) => e.lines().iter().for_each(|l| println!("{l}")),
        }
    }
}
