fn main() {
    std::process::exit(rvcluster::command::main());
}
