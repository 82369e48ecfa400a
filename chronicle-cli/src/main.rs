//! `chron-cli`: the operator's tool for chronicle queues and buses.

fn main() {
    println!(
        "chron-cli {}: subcommands arrive with the CLI work (see ROADMAP.md)",
        env!("CARGO_PKG_VERSION")
    );
}
