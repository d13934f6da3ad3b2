//! A hand-driven SFTP v3 client over OpenSSH `ssh -s sftp`: the exact
//! request sequences some clients send (old sshfs, a client resuming
//! without TRUNCATE), through the real SSH transport and the real daemon.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

pub const WRITE: u32 = 0x02;
pub const CREAT: u32 = 0x08;
pub const TRUNC: u32 = 0x10;

pub const NO_SUCH_FILE: u32 = 2;

/// A status reply: (code, message).
pub type Status = (u32, String);

pub struct RawSftp {
    _child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    next_id: u32,
}

enum Reply {
    Status(Status),
    Handle(Vec<u8>),
    Attrs(Option<u64>),
}

fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn take_u32(buf: &mut &[u8]) -> u32 {
    let v = u32::from_be_bytes(buf[..4].try_into().unwrap());
    *buf = &buf[4..];
    v
}

fn take_string(buf: &mut &[u8]) -> Vec<u8> {
    let len = take_u32(buf) as usize;
    let v = buf[..len].to_vec();
    *buf = &buf[len..];
    v
}

impl RawSftp {
    /// Logs in as `user` with `key` and starts the `sftp` subsystem.
    pub async fn connect(key: &Path, port: &str, user: &str) -> RawSftp {
        let mut child = Command::new("ssh")
            .args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"])
            .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR", "-i"])
            .arg(key)
            .args(["-p", port, "-s", &format!("{user}@127.0.0.1"), "sftp"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("ssh runs");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut sftp = RawSftp { _child: child, stdin, stdout, next_id: 1 };
        let mut init = vec![1u8];
        init.extend_from_slice(&3u32.to_be_bytes());
        sftp.send(&init).await;
        let version = sftp.receive().await;
        assert_eq!(version[0], 2, "SSH_FXP_VERSION");
        sftp
    }

    async fn send(&mut self, packet: &[u8]) {
        let mut framed = (packet.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(packet);
        self.stdin.write_all(&framed).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    async fn receive(&mut self) -> Vec<u8> {
        let read = async {
            let mut len = [0u8; 4];
            self.stdout.read_exact(&mut len).await.unwrap();
            let mut packet = vec![0u8; u32::from_be_bytes(len) as usize];
            self.stdout.read_exact(&mut packet).await.unwrap();
            packet
        };
        tokio::time::timeout(Duration::from_secs(30), read).await.expect("an SFTP reply in time")
    }

    async fn request(&mut self, kind: u8, body: &[u8]) -> Reply {
        let id = self.next_id;
        self.next_id += 1;
        let mut packet = vec![kind];
        packet.extend_from_slice(&id.to_be_bytes());
        packet.extend_from_slice(body);
        self.send(&packet).await;
        let reply = self.receive().await;
        let mut rest = &reply[1..];
        assert_eq!(take_u32(&mut rest), id, "the reply to this request");
        match reply[0] {
            101 => {
                let code = take_u32(&mut rest);
                let message = String::from_utf8_lossy(&take_string(&mut rest)).into_owned();
                Reply::Status((code, message))
            }
            102 => Reply::Handle(take_string(&mut rest)),
            105 => {
                let flags = take_u32(&mut rest);
                let size = (flags & 1 != 0).then(|| u64::from_be_bytes(rest[..8].try_into().unwrap()));
                Reply::Attrs(size)
            }
            other => panic!("unexpected SFTP reply type {other}"),
        }
    }

    pub async fn open(&mut self, path: &str, pflags: u32) -> Result<Vec<u8>, Status> {
        let mut body = Vec::new();
        put_string(&mut body, path.as_bytes());
        body.extend_from_slice(&pflags.to_be_bytes());
        body.extend_from_slice(&0u32.to_be_bytes());
        match self.request(3, &body).await {
            Reply::Handle(h) => Ok(h),
            Reply::Status(s) => Err(s),
            Reply::Attrs(_) => panic!("attrs for an OPEN"),
        }
    }

    async fn status_of(&mut self, kind: u8, body: &[u8]) -> Status {
        match self.request(kind, body).await {
            Reply::Status(s) => s,
            _ => panic!("a status expected"),
        }
    }

    pub async fn write(&mut self, handle: &[u8], offset: u64, data: &[u8]) -> Status {
        let mut body = Vec::new();
        put_string(&mut body, handle);
        body.extend_from_slice(&offset.to_be_bytes());
        put_string(&mut body, data);
        self.status_of(6, &body).await
    }

    pub async fn close(&mut self, handle: &[u8]) -> Status {
        let mut body = Vec::new();
        put_string(&mut body, handle);
        self.status_of(4, &body).await
    }

    /// LSTAT: the size, or the status.
    pub async fn lstat(&mut self, path: &str) -> Result<u64, Status> {
        let mut body = Vec::new();
        put_string(&mut body, path.as_bytes());
        match self.request(7, &body).await {
            Reply::Attrs(size) => Ok(size.unwrap_or(0)),
            Reply::Status(s) => Err(s),
            Reply::Handle(_) => panic!("a handle for an LSTAT"),
        }
    }
}
