//! One authenticated SSH session to one host, with timeouts and clear errors.

use std::io::Read;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use ssh2::Session;

use super::hostkey::{KnownHostsFile, Verified};
use super::inventory::{expand_home, Auth, Host};

/// libssh2's "timed out" error code (`LIBSSH2_ERROR_TIMEOUT`).
const LIBSSH2_ERROR_TIMEOUT: i32 = -9;

/// Connection settings shared by all hosts.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Limit for the TCP connect, the SSH handshake and authentication.
    pub connect: Duration,
    /// Limit for every remote command and every single SFTP operation.
    pub command: Duration,
}

/// The output of a remote command.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit status.
    pub status: i32,
    /// Standard output (lossy UTF-8).
    pub stdout: String,
    /// Standard error (lossy UTF-8).
    pub stderr: String,
}

impl Output {
    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

/// An authenticated session.
pub struct Remote {
    session: Session,
    timeouts: Timeouts,
    /// What the host-key check found.
    pub verified: Verified,
}

impl Remote {
    /// Resolves, connects, verifies the host key and authenticates.
    /// `password` is the password or key passphrase, when one was given.
    pub fn connect(
        host: &Host,
        known_hosts: &KnownHostsFile,
        timeouts: Timeouts,
        password: Option<&str>,
    ) -> anyhow::Result<Self> {
        let stream = tcp_connect(&host.address, host.port, timeouts.connect)?;
        let mut session = Session::new().context("cannot create an SSH session")?;
        session.set_timeout(millis(timeouts.connect));
        session.set_tcp_stream(stream);
        session.handshake().map_err(|e| {
            anyhow!(
                "SSH handshake with {}:{} failed: {} (is it an SSH server?)",
                host.address,
                host.port,
                describe(&e, timeouts.connect)
            )
        })?;
        let verified = known_hosts.verify(&session, &host.address, host.port)?;
        authenticate(&session, host, password).map_err(|e| {
            anyhow!(
                "authentication failed for {}@{}: {e:#}",
                host.user,
                host.address
            )
        })?;
        session.set_timeout(millis(timeouts.command));
        Ok(Self {
            session,
            timeouts,
            verified,
        })
    }

    /// Runs `command` through the remote user's shell and collects its output.
    /// Fails on transport errors and timeouts, not on a non-zero exit status.
    pub fn exec(&self, command: &str) -> anyhow::Result<Output> {
        let timeout = self.timeouts.command;
        let fail =
            |e: ssh2::Error| anyhow!("remote command `{command}`: {}", describe(&e, timeout));
        let mut channel = self.session.channel_session().map_err(fail)?;
        channel.exec(command).map_err(fail)?;
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        channel
            .read_to_end(&mut stdout)
            .map_err(|e| io_fail(command, e, timeout))?;
        channel
            .stderr()
            .read_to_end(&mut stderr)
            .map_err(|e| io_fail(command, e, timeout))?;
        channel.wait_close().map_err(fail)?;
        let status = channel.exit_status().map_err(fail)?;
        Ok(Output {
            status,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        })
    }

    /// Runs `command` and fails (with its stderr) unless it exits with 0.
    pub fn exec_ok(&self, command: &str) -> anyhow::Result<String> {
        let out = self.exec(command)?;
        if !out.success() {
            bail!(
                "remote command `{command}` exited with {}: {}",
                out.status,
                out.stderr.trim()
            );
        }
        Ok(out.stdout)
    }

    /// Opens the SFTP subsystem.
    pub fn sftp(&self) -> anyhow::Result<ssh2::Sftp> {
        self.session
            .sftp()
            .map_err(|e| anyhow!("cannot start SFTP: {}", describe(&e, self.timeouts.command)))
    }
}

fn io_fail(command: &str, e: std::io::Error, timeout: Duration) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::TimedOut || e.to_string().contains("timed out") {
        anyhow!("remote command `{command}` timed out after {timeout:?} (--command-timeout)")
    } else {
        anyhow!("remote command `{command}`: {e}")
    }
}

/// Describes a libssh2 error, naming timeouts plainly.
pub fn describe(e: &ssh2::Error, timeout: Duration) -> String {
    match e.code() {
        ssh2::ErrorCode::Session(LIBSSH2_ERROR_TIMEOUT) => format!("timed out after {timeout:?}"),
        _ => e.to_string(),
    }
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1)
}

/// Resolves `address` and connects to the first address that answers.
fn tcp_connect(address: &str, port: u16, timeout: Duration) -> anyhow::Result<TcpStream> {
    let addrs: Vec<SocketAddr> = (address, port)
        .to_socket_addrs()
        .map_err(|e| anyhow!("cannot resolve host name `{address}` (DNS failure): {e}"))?
        .collect();
    if addrs.is_empty() {
        bail!("cannot resolve host name `{address}` (DNS failure): no addresses");
    }
    let mut errors = Vec::new();
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => errors.push(match e.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    format!("connection refused at {addr} (is sshd running on port {port}?)")
                }
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                    format!("connection to {addr} timed out after {timeout:?} (--connect-timeout)")
                }
                _ => format!("cannot connect to {addr}: {e}"),
            }),
        }
    }
    Err(anyhow!(errors.join("; ")))
}

fn authenticate(session: &Session, host: &Host, password: Option<&str>) -> anyhow::Result<()> {
    match &host.auth {
        Auth::Key(path) => {
            let key = expand_home(path);
            if !key.exists() {
                bail!("private key {} does not exist", key.display());
            }
            let public = key.with_extension(match key.extension() {
                Some(ext) => format!("{}.pub", ext.to_string_lossy()),
                None => "pub".to_string(),
            });
            let public = public.exists().then_some(public);
            session
                .userauth_pubkey_file(&host.user, public.as_deref(), &key, password)
                .map_err(|e| {
                    anyhow!(
                        "the server refused key {} ({e}); is its public key in the user's \
                         ~/.ssh/authorized_keys, and is the passphrase (if any) in {}?",
                        key.display(),
                        super::inventory::password_env_var(&host.name)
                    )
                })?;
        }
        Auth::Agent => agent_auth(session, &host.user)?,
        Auth::Password => {
            let Some(password) = password else {
                bail!(
                    "auth is \"password\" but no password was given: set {} or pass --ask-password",
                    super::inventory::password_env_var(&host.name)
                );
            };
            session
                .userauth_password(&host.user, password)
                .map_err(|e| anyhow!("the server refused the password ({e})"))?;
        }
    }
    if !session.authenticated() {
        bail!("the server did not accept the credentials");
    }
    Ok(())
}

/// Tries every identity of the running ssh-agent in turn.
fn agent_auth(session: &Session, user: &str) -> anyhow::Result<()> {
    let mut agent = session.agent().context("cannot use the ssh-agent")?;
    agent
        .connect()
        .map_err(|e| anyhow!("cannot reach the ssh-agent (is SSH_AUTH_SOCK set?): {e}"))?;
    agent
        .list_identities()
        .map_err(|e| anyhow!("cannot list the ssh-agent's identities: {e}"))?;
    let identities = agent
        .identities()
        .map_err(|e| anyhow!("cannot list the ssh-agent's identities: {e}"))?;
    if identities.is_empty() {
        bail!("the ssh-agent holds no identities (ssh-add your key)");
    }
    for identity in &identities {
        if agent.userauth(user, identity).is_ok() {
            let _ = agent.disconnect();
            return Ok(());
        }
    }
    let _ = agent.disconnect();
    bail!(
        "the server refused all {} identities of the ssh-agent",
        identities.len()
    )
}

/// Quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Quotes a remote path for a POSIX shell.
pub fn quote_path(p: &Path) -> String {
    shell_quote(&p.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }

    #[test]
    fn refused_and_dns_errors_are_named() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let err = tcp_connect("127.0.0.1", port, Duration::from_secs(2)).unwrap_err();
        assert!(err.to_string().contains("connection refused"), "{err}");
        let err = tcp_connect("no-such-host.invalid", 22, Duration::from_secs(2)).unwrap_err();
        assert!(err.to_string().contains("DNS failure"), "{err}");
    }
}
