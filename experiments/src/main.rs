//! The `wflora` command line.

fn main() {
    println!("wflora");
}
