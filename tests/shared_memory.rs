//! Issue item 4: state an initialiser builds in a template is shared
//! copy-on-write by every fork. A template builds a 200 MB table; 8 forks
//! read all of it; their total PSS stays far below 8 × 200 MB.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;

use anyfork::Fork;

const TABLE_MB: usize = 200;
static TABLE: OnceLock<Vec<u8>> = OnceLock::new();

/// Builds the table, touching every page.
fn build_table(args: &[Vec<u8>]) -> Result<(), String> {
    let mb: usize = String::from_utf8_lossy(&args[0])
        .parse()
        .map_err(|e| format!("{e}"))?;
    let mut table = vec![0u8; mb << 20];
    table.fill(1);
    for (i, page) in table.chunks_mut(4096).enumerate() {
        page[0] = i as u8;
    }
    TABLE.set(table).map_err(|_| "built twice".to_owned())
}

/// Reads every page of the table, reports a checksum, then waits until the
/// parent closes the socket (so it can be measured alive).
fn read_table(mut socket: UnixStream, _args: anyfork::Args) -> std::io::Result<()> {
    let table = TABLE
        .get()
        .ok_or_else(|| std::io::Error::other("no table"))?;
    let sum: u64 = table
        .chunks(4096)
        .map(|p| p[0] as u64 + p[4095] as u64)
        .sum();
    writeln!(socket, "{sum}")?;
    let mut buf = [0u8; 1];
    let _ = socket.read(&mut buf);
    Ok(())
}

#[test]
fn forks_share_what_the_template_built() {
    let template = Fork::new()
        .unwrap()
        .eval(build_table, [TABLE_MB.to_string()]);
    let template_pid = template.pid().unwrap();
    let pages = (TABLE_MB << 20) / 4096;
    let expected: u64 = (0..pages).map(|i| (i as u8) as u64 + 1).sum();

    let mut children = Vec::new();
    for _ in 0..8 {
        let (mut socket, process) = template
            .fork()
            .unwrap()
            .run_with_process(read_table)
            .unwrap();
        let mut line = [0u8; 32];
        let n = socket.read(&mut line).unwrap();
        let sum: u64 = std::str::from_utf8(&line[..n])
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(sum, expected, "every child sees the whole table");
        children.push((socket, process));
    }

    let table_kb = (TABLE_MB as u64) << 10;
    let mut total_pss = 0;
    for (_, process) in &children {
        let rss = common::smaps_kb(process.id(), "Rss");
        assert!(
            rss >= table_kb,
            "a child maps the whole table: Rss {rss} kB"
        );
        total_pss += common::smaps_kb(process.id(), "Pss");
    }
    let template_pss = common::smaps_kb(template_pid, "Pss");
    let unshared = 8 * table_kb;
    eprintln!(
        "8 children: total PSS {} MB (template {} MB); unshared would be {} MB",
        total_pss >> 10,
        template_pss >> 10,
        unshared >> 10
    );
    // Shared 9 ways (template + 8 children) the children hold 8/9 of one
    // table; allow generous slack, but nowhere near a copy each.
    assert!(
        total_pss < unshared / 4,
        "total PSS {total_pss} kB is not far below {unshared} kB"
    );
    for (socket, process) in children {
        drop(socket);
        assert!(process.wait().unwrap().success());
    }
}
