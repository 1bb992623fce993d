// A run function that does not take the socket and the arguments.
fn worker(n: u32) -> u32 {
    n
}

fn main() {
    let _ = anyfork::Fork::new().unwrap().run(worker);
}
