//! Test stand-in for `skep shim …`: runs the container shim.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(skep_node::shim::run(&args));
}
