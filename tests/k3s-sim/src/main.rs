fn main() {
    std::process::exit(k3s_sim::cli::main());
}
