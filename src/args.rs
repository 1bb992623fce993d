//! What a child's function receives: the byte strings and file descriptors
//! sent with [`send_arg`](crate::Fork::send_arg) and
//! [`send_fh`](crate::Fork::send_fh), in the order they were sent.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;

/// One item sent to a process before `run`.
#[derive(Debug)]
pub enum Arg {
    /// A byte string from [`send_arg`](crate::Fork::send_arg).
    Bytes(Vec<u8>),
    /// A file descriptor from [`send_fh`](crate::Fork::send_fh). It is
    /// close-on-exec in the child, like every descriptor anyfork creates; to
    /// hand it to a program you `exec`, `dup2` it onto the number you want.
    Fd(OwnedFd),
}

impl Arg {
    fn kind(&self) -> &'static str {
        match self {
            Arg::Bytes(_) => "a byte string",
            Arg::Fd(_) => "a file descriptor",
        }
    }
}

/// Taking an argument of the wrong kind, or one that is not there.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArgError {
    /// Fewer arguments were sent than the function takes.
    #[error("argument {position} is missing: only {sent} were sent")]
    Missing {
        /// Position of the argument asked for, counting from 0.
        position: usize,
        /// How many were sent in all.
        sent: usize,
    },
    /// The argument is of the other kind.
    #[error("argument {position} is {found}, not {expected}")]
    WrongKind {
        /// Position of the argument, counting from 0.
        position: usize,
        /// What the function asked for.
        expected: &'static str,
        /// What was sent.
        found: &'static str,
    },
    /// The byte string is not UTF-8.
    #[error("argument {position} is not UTF-8")]
    NotUtf8 {
        /// Position of the argument, counting from 0.
        position: usize,
    },
}

/// So that a worker returning `std::io::Result` can use `?` on its
/// arguments: the error becomes `InvalidInput` with the same message.
///
/// ```
/// fn worker(_socket: std::os::unix::net::UnixStream, mut args: anyfork::Args) -> std::io::Result<()> {
///     let _name = args.string()?;
///     Ok(())
/// }
/// # let _ = worker;
/// ```
impl From<ArgError> for std::io::Error {
    fn from(error: ArgError) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, error)
    }
}

/// The arguments of a child's function, in send order.
///
/// Take them front to back with [`bytes`](Args::bytes),
/// [`string`](Args::string) and [`fd`](Args::fd), or iterate over [`Arg`]s.
///
/// ```
/// use anyfork::{Arg, Args};
/// # let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
/// let mut args = Args::from(vec![Arg::Bytes(b"7".to_vec()), Arg::Fd(a.into())]);
/// let id: u32 = args.string()?.parse()?;
/// let listener = args.fd()?;
/// assert_eq!(id, 7);
/// assert!(args.is_empty());
/// # drop(listener);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct Args {
    items: VecDeque<Arg>,
    taken: usize,
}

impl From<Vec<Arg>> for Args {
    fn from(items: Vec<Arg>) -> Self {
        Self {
            items: items.into(),
            taken: 0,
        }
    }
}

impl Args {
    /// Arguments not taken yet.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when every argument has been taken.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn take(&mut self) -> Result<Arg, ArgError> {
        match self.items.pop_front() {
            Some(arg) => {
                self.taken += 1;
                Ok(arg)
            }
            None => Err(ArgError::Missing {
                position: self.taken,
                sent: self.taken,
            }),
        }
    }

    /// Takes the next argument, which must be a byte string.
    pub fn bytes(&mut self) -> Result<Vec<u8>, ArgError> {
        match self.take()? {
            Arg::Bytes(b) => Ok(b),
            other => Err(self.wrong_kind("a byte string", &other)),
        }
    }

    /// Takes the next argument, which must be a UTF-8 byte string.
    pub fn string(&mut self) -> Result<String, ArgError> {
        let position = self.taken;
        String::from_utf8(self.bytes()?).map_err(|_| ArgError::NotUtf8 { position })
    }

    /// Takes the next argument, which must be a file descriptor.
    pub fn fd(&mut self) -> Result<OwnedFd, ArgError> {
        match self.take()? {
            Arg::Fd(fd) => Ok(fd),
            other => Err(self.wrong_kind("a file descriptor", &other)),
        }
    }

    fn wrong_kind(&self, expected: &'static str, found: &Arg) -> ArgError {
        ArgError::WrongKind {
            position: self.taken - 1,
            expected,
            found: found.kind(),
        }
    }

    /// All remaining arguments.
    pub fn into_vec(self) -> Vec<Arg> {
        self.items.into()
    }
}

impl Iterator for Args {
    type Item = Arg;

    fn next(&mut self) -> Option<Arg> {
        let arg = self.items.pop_front()?;
        self.taken += 1;
        Some(arg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_position() {
        let mut args = Args::from(vec![Arg::Bytes(vec![0xff])]);
        assert!(matches!(
            args.fd(),
            Err(ArgError::WrongKind { position: 0, .. })
        ));
        let mut args = Args::from(vec![Arg::Bytes(vec![0xff])]);
        assert!(matches!(
            args.string(),
            Err(ArgError::NotUtf8 { position: 0 })
        ));
        assert!(matches!(
            args.bytes(),
            Err(ArgError::Missing {
                position: 1,
                sent: 1
            })
        ));
    }

    #[test]
    fn an_argument_error_is_an_invalid_input_io_error_with_its_message() {
        let mut args = Args::from(Vec::new());
        let error: std::io::Error = args.string().unwrap_err().into();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
        assert_eq!(error.to_string(), "argument 0 is missing: only 0 were sent");
    }
}
