// A throwaway OpenSSH server on 127.0.0.1, for the ssh tests
// (`tests/common`) and `anyfork bench remote` (`cli/src`), which both
// `include!` this file.
//
// It makes its own host key and user key in a fresh directory, listens on
// a free port of 127.0.0.1 only, accepts only that user key, and is run
// under `timeout`, so it stops by itself even if its owner never does.
// Dropping it stops it and removes the directory.

/// A throwaway `sshd` (see the file's comment).
pub struct ThrowawaySshd {
    child: std::process::Child,
    dir: std::path::PathBuf,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    /// The user to log in as (the one running this program).
    pub user: String,
}

/// Where Debian's `sshd` is.
const SSHD: &str = "/usr/sbin/sshd";

impl ThrowawaySshd {
    /// Whether `sshd`, `ssh` and `ssh-keygen` are installed; if not, what
    /// to install.
    pub fn missing() -> Option<String> {
        let found = |program: &str| {
            std::process::Command::new(program)
                .arg("-V")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok()
        };
        if !std::path::Path::new(SSHD).exists() {
            return Some(format!(
                "{SSHD} is not installed (apt-get install openssh-server openssh-client)"
            ));
        }
        if !found("ssh") {
            return Some("ssh is not installed (apt-get install openssh-client)".into());
        }
        if std::process::Command::new("ssh-keygen")
            .arg("-?")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_err()
        {
            return Some("ssh-keygen is not installed (apt-get install openssh-client)".into());
        }
        None
    }

    /// Starts one, stopping by itself after `lifetime`.
    pub fn start(lifetime: std::time::Duration) -> Result<ThrowawaySshd, String> {
        if let Some(missing) = ThrowawaySshd::missing() {
            return Err(missing);
        }
        let dir = std::env::temp_dir().join(format!(
            "anyfork-sshd-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for key in ["host_key", "user_key"] {
            let status = std::process::Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "anyfork-test", "-f"])
                .arg(dir.join(key))
                .status()
                .map_err(|e| format!("ssh-keygen: {e}"))?;
            if !status.success() {
                return Err(format!("ssh-keygen failed: {status}"));
            }
        }
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name)).map_err(|e| format!("{name}: {e}"))
        };
        std::fs::write(dir.join("authorized_keys"), read("user_key.pub")?)
            .map_err(|e| e.to_string())?;
        // The server's privilege separation directory (Debian's sshd wants
        // it even when it will not use it).
        let _ = std::fs::create_dir_all("/run/sshd");
        let user = std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(|| {
                let out = std::process::Command::new("id").arg("-un").output().ok()?;
                Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
            })
            .ok_or("cannot tell who this user is")?;
        let mut last = String::new();
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("finding a free port: {e}"))?
                .port();
            let config = dir.join("sshd_config");
            let d = dir.display();
            std::fs::write(
                &config,
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\n\
                     PidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/authorized_keys\n\
                     StrictModes no\nUsePAM no\nPasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                     PermitRootLogin yes\nAcceptEnv XDG_CACHE_HOME\nMaxStartups 500\n\
                     MaxSessions 500\nLogLevel ERROR\n"
                ),
            )
            .map_err(|e| e.to_string())?;
            let host_key = read("host_key.pub")?;
            std::fs::write(
                dir.join("known_hosts"),
                format!("[127.0.0.1]:{port} {host_key}"),
            )
            .map_err(|e| e.to_string())?;
            let mut child = std::process::Command::new("timeout")
                .args(["-k", "5"])
                .arg(lifetime.as_secs().max(1).to_string())
                .args([SSHD, "-D", "-e", "-f"])
                .arg(&config)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| format!("starting {SSHD}: {e}"))?;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Ok(ThrowawaySshd {
                        child,
                        dir,
                        port,
                        user,
                    });
                }
                if let Ok(Some(status)) = child.try_wait() {
                    let mut said = String::new();
                    if let Some(mut err) = child.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut err, &mut said);
                    }
                    last = format!("{SSHD} exited ({status}): {}", said.trim());
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            if last.is_empty() {
                last = format!("{SSHD} did not listen on port {port} within 10 s");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(last)
    }

    /// `user@127.0.0.1`.
    pub fn destination(&self) -> String {
        format!("{}@127.0.0.1", self.user)
    }

    /// The ssh options that reach it with the throwaway key, checking its
    /// host key, reading no user configuration.
    pub fn ssh_options(&self) -> Vec<String> {
        let d = self.dir.display();
        vec![
            "-F".into(),
            "/dev/null".into(),
            "-p".into(),
            self.port.to_string(),
            "-i".into(),
            format!("{d}/user_key"),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            format!("UserKnownHostsFile={d}/known_hosts"),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            "LogLevel=ERROR".into(),
        ]
    }

    /// A directory of its own, for files the tests put on "the far side"
    /// (the benchmark has none).
    #[allow(dead_code)]
    pub fn scratch_dir(&self, name: &str) -> std::path::PathBuf {
        let dir = self.dir.join(name);
        let _ = std::fs::create_dir_all(&dir);
        dir
    }
}

impl Drop for ThrowawaySshd {
    fn drop(&mut self) {
        // `timeout` passes SIGTERM on to sshd (a SIGKILL would orphan it).
        // SAFETY: signalling our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
