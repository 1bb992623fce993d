//! The serve marker: `ANYFORK_SERVE=FD:VERSION` (an inherited unix socket),
//! `stdio:VERSION` (stdin and stdout) or `mux:VERSION` (the relay of a
//! remote connection), in the environment or as the first argument
//! `--anyfork-serve=…`; see the [protocol page](crate::protocol).

use crate::proto;

/// What a first argument starts with to ask for serve mode (ssh drops the
/// environment; see [`crate::remote::serve_arg`]).
pub(super) const SERVE_ARGUMENT: &[u8] = b"--anyfork-serve=";

/// The program's first argument, from `/proc/self/cmdline` (where the C
/// library does not hand `argv` to `.init_array` functions).
pub(super) fn second_argument() -> Option<Vec<u8>> {
    let cmdline = std::fs::read("/proc/self/cmdline").ok()?;
    cmdline.split(|&b| b == 0).nth(1).map(<[u8]>::to_vec)
}

/// Where a marker says the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MarkedConnection {
    /// An inherited unix stream socket.
    Socket(i32),
    /// stdin and stdout.
    Stdio,
    /// stdin and stdout, to a parent on another machine: the relay of a
    /// [remote](crate::remote) connection.
    Mux,
}

pub(super) type Marker = Result<(MarkedConnection, Result<(), String>), String>;

/// Splits a marker `FD:VERSION` or `stdio:VERSION` into the connection and
/// the version check's verdict (a marker whose connection is good but whose
/// version is wrong can still be answered on that connection).
pub(super) fn parse_marker(value: &[u8]) -> Marker {
    let text = std::str::from_utf8(value).map_err(|_| "marker is not UTF-8".to_owned())?;
    let (fd, version) = text.split_once(':').ok_or_else(|| {
        format!("marker {text:?} is not FD:VERSION, stdio:VERSION or mux:VERSION")
    })?;
    let connection = if fd == "stdio" {
        MarkedConnection::Stdio
    } else if fd == "mux" {
        MarkedConnection::Mux
    } else {
        let fd: i32 = fd
            .parse()
            .map_err(|_| format!("marker {text:?} does not name a descriptor"))?;
        if fd < 0 {
            return Err(format!("marker {text:?} names a negative descriptor"));
        }
        MarkedConnection::Socket(fd)
    };
    let version = match version.parse::<u32>() {
        Ok(v) if v == proto::PROTOCOL_VERSION => Ok(()),
        Ok(v) => Err(format!(
            "marker {text:?} asks for protocol {v}, this program speaks {}",
            proto::PROTOCOL_VERSION
        )),
        Err(_) => Err(format!("marker {text:?} has no version number")),
    };
    Ok((connection, version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_checked() {
        assert_eq!(
            parse_marker(b"3:1"),
            Ok((MarkedConnection::Socket(3), Ok(())))
        );
        assert_eq!(
            parse_marker(b"stdio:1"),
            Ok((MarkedConnection::Stdio, Ok(())))
        );
        assert!(parse_marker(b"3").is_err());
        assert!(parse_marker(b"x:1").is_err());
        assert!(
            parse_marker(b"3:99")
                .unwrap()
                .1
                .unwrap_err()
                .contains("protocol 99")
        );
        assert!(parse_marker(b"3:v").unwrap().1.is_err());
        assert!(parse_marker(b"-1:1").is_err());
    }
}
