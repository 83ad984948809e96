//! `seed-upstream ENDPOINT`: push the deterministic lab images (fixtures/upstream/images.txt) to
//! a registry, e.g. `seed-upstream http://127.0.9.1:5000`.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [endpoint] = args.as_slice() else {
        eprintln!("usage: seed-upstream ENDPOINT   (e.g. http://127.0.9.1:5000)");
        std::process::exit(2);
    };
    match k3s_sim::upstream::seed(endpoint) {
        Ok(images) => {
            for i in images {
                println!("{}\t{}\t{}", i.name, i.digest, i.platforms.join(","));
            }
        }
        Err(e) => {
            eprintln!("seed-upstream: {e}");
            std::process::exit(1);
        }
    }
}
