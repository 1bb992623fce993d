//! Issue item 6: `send_fh` passes any descriptor (file, pipe, connected
//! socket, listening socket) and `send_arg` any bytes (empty, NUL, 1 MiB),
//! in order across mixed calls.

mod common;

use std::io::{Read, Seek, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use anyfork::{Arg, Args, Fork};
use common::read_all;

/// Uses each descriptor for what it is, and reports every argument in
/// order: byte strings by length and checksum, descriptors by what they did.
fn use_everything(mut socket: UnixStream, args: Args) -> std::io::Result<()> {
    let mut report = Vec::new();
    for arg in args {
        match arg {
            Arg::Bytes(b) => {
                let sum: u64 = b.iter().map(|&x| x as u64).sum();
                report.push(format!("bytes({},{sum})", b.len()));
            }
            Arg::Fd(fd) => report.push(use_fd(fd)?),
        }
    }
    socket.write_all(report.join(" ").as_bytes())
}

fn use_fd(fd: OwnedFd) -> std::io::Result<String> {
    let kind = rustix::fs::fstat(&fd)?.st_mode & libc::S_IFMT;
    if kind == libc::S_IFREG {
        let mut file = std::fs::File::from(fd);
        file.rewind()?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        return Ok(format!("file({text})"));
    }
    if kind == libc::S_IFIFO {
        let mut pipe = std::fs::File::from(fd);
        pipe.write_all(b"through the pipe")?;
        return Ok("pipe".into());
    }
    if rustix::net::sockopt::socket_acceptconn(&fd)? {
        let listener = TcpListener::from(fd);
        let (mut conn, _) = listener.accept()?;
        conn.write_all(b"accepted")?;
        return Ok("listener".into());
    }
    let mut stream = TcpStream::from(fd);
    let mut buf = [0u8; 4];
    stream.read_exact(&mut buf)?;
    stream.write_all(&buf.map(|c| c.to_ascii_uppercase()))?;
    Ok(format!("socket({})", String::from_utf8_lossy(&buf)))
}

#[test]
fn any_descriptor_kind_and_any_bytes_in_order() {
    // A file.
    let mut file = tempfile_with("file contents");
    // A pipe: the child writes, we read.
    let (pipe_read, pipe_write) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    // A listening socket: we connect after the child got it.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // A connected socket: we write four bytes, the child echoes them upper-cased.
    let peer_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut ours = TcpStream::connect(peer_listener.local_addr().unwrap()).unwrap();
    let (theirs, _) = peer_listener.accept().unwrap();
    ours.write_all(b"ping").unwrap();

    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let big_sum: u64 = big.iter().map(|&x| x as u64).sum();
    file.rewind().unwrap();
    let socket = Fork::new()
        .unwrap()
        .send_arg("")
        .send_fh(file)
        .send_arg(b"a\0b")
        .send_fh(pipe_write)
        .send_arg(&big)
        .send_fh(theirs)
        .send_fh(listener)
        .send_arg([0u8])
        .run(use_everything)
        .unwrap();

    let mut accepted = TcpStream::connect(addr).unwrap();
    let mut greeting = String::new();
    accepted.read_to_string(&mut greeting).unwrap();
    assert_eq!(greeting, "accepted");

    let report = read_all(socket);
    assert_eq!(
        report,
        format!(
            "bytes(0,0) file(file contents) bytes(3,{}) pipe bytes({},{big_sum}) socket(ping) listener bytes(1,0)",
            b'a' as u64 + b'b' as u64,
            big.len()
        )
    );
    let mut from_pipe = String::new();
    std::fs::File::from(pipe_read)
        .read_to_string(&mut from_pipe)
        .unwrap();
    assert_eq!(from_pipe, "through the pipe");
    let mut echoed = [0u8; 4];
    ours.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"PING");
}

#[test]
fn many_descriptors_in_one_batch() {
    // More descriptors than one sendmsg carries: they are split over
    // several, and still arrive in order.
    let mut fork = Fork::new().unwrap();
    let mut ours = Vec::new();
    for i in 0..100 {
        let (a, b) = UnixStream::pair().unwrap();
        fork = fork.send_fh(b).send_arg(i.to_string());
        ours.push(a);
    }
    fn echo_index(mut socket: UnixStream, mut args: Args) -> std::io::Result<()> {
        let mut n = 0;
        while !args.is_empty() {
            let fd = args.fd().map_err(std::io::Error::other)?;
            let index = args.string().map_err(std::io::Error::other)?;
            UnixStream::from(fd).write_all(index.as_bytes())?;
            n += 1;
        }
        write!(socket, "{n}")
    }
    let socket = fork.run(echo_index).unwrap();
    assert_eq!(read_all(socket), "100");
    for (i, a) in ours.into_iter().enumerate() {
        assert_eq!(read_all(a), i.to_string());
    }
}

fn tempfile_with(contents: &str) -> std::fs::File {
    let path = std::env::temp_dir().join(format!(
        "anyfork-send-{}-{}",
        std::process::id(),
        contents.len()
    ));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    file.write_all(contents.as_bytes()).unwrap();
    file
}
