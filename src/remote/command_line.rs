//! The far side's command line: the argument that starts serve mode, and
//! quoting for the remote shell (ssh hands its command to one).

/// The argument that starts a program linking anyfork as a relay instead
/// of running its `main`, when it comes first: `--anyfork-serve=mux:1`.
/// ssh drops the environment, so this is how a command line asks; `env
/// ANYFORK_SERVE=mux:1 prog` works as well. Programs that parse their own
/// arguments never see it: a program started with it does not reach
/// `main`.
///
/// ```
/// assert_eq!(anyfork::remote::serve_arg(), "--anyfork-serve=mux:1");
/// ```
pub fn serve_arg() -> String {
    format!("--anyfork-serve={}", crate::proto::marker_value("mux"))
}

/// `word` quoted for a POSIX shell.
pub(crate) fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@".contains(&b))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}
