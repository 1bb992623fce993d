use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

fn echo(mut socket: UnixStream, mut args: anyfork::Args) -> std::io::Result<()> {
    let word = args.string().map_err(std::io::Error::other)?;
    write!(socket, "{word} from {}", std::process::id())
}
anyfork::function!(echo);

#[test]
fn smoke() {
    let f = anyfork::Fork::new_exec().unwrap();
    eprintln!("pid {}", f.pid().unwrap());
    let mut s = f.send_arg("typed").run(echo).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    eprintln!("{out}");
    let mut s = anyfork::Fork::new()
        .unwrap()
        .send_arg("named")
        .run("smoke::echo")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    eprintln!("{out}");
}
