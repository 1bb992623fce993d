// An RPC function whose argument is not a serde type.
struct NotSerde(u32);

fn f(x: NotSerde) -> u32 {
    x.0
}

fn main() {
    let _ = anyfork::Fork::new().unwrap().rpc(f).start();
}
