//! The commands an exec request may run, parsed and served in Rust: no shell
//! is ever started. Exactly these are accepted:
//!
//! - `scp -t [-p] [-d] [-v] [--] PATH`: the legacy scp protocol's sink
//!   (`scp -O`, OpenSSH before 9.0, WinSCP's SCP mode), uploading into
//!   `/customers` through the same jail, name rules, size limit and atomic
//!   publish as SFTP;
//! - `scp -f [-p] [-v] [--] PATH`: its source, one file (no `-r`, no globs);
//! - `md5sum`, `sha1sum`, `sha256sum` of one file in the jail, or of standard
//!   input without a path (rclone probes `md5sum` of nothing first), printed
//!   as coreutils does: `<hex>  <name>\n`.
//!
//! Paths are single shell words: quoting (`'...'`, `"..."`) and backslash
//! escapes are undone as a POSIX shell would (rclone escapes with `\`), and
//! any unquoted shell syntax (`;|&<>()$` and backquotes, globs) refuses
//! the command. Everything else answers on stderr with a non-zero exit status.

use std::collections::VecDeque;

use russh::server::Msg;
use russh::{Channel, ChannelMsg};
use sha2::digest::DynDigest;

use super::fs::AccountFs;

/// Longest command line accepted.
const MAX_COMMAND_BYTES: usize = 4096;
/// Longest scp control line (`C0644 SIZE NAME`, `T...`).
const MAX_SCP_LINE: usize = 4096;
/// Bytes read from a file per step when hashing or sending it.
const CHUNK: u32 = 32 * 1024;

/// A parsed exec command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// `scp -t`: receive files into `target` (a folder, or a file name).
    ScpSink { target: String, target_is_dir: bool },
    /// `scp -f`: send one file.
    ScpSource { path: String, preserve: bool },
    /// `md5sum` and friends, of a file or (`None`) of standard input.
    Hash { algorithm: HashAlgorithm, path: Option<String> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HashAlgorithm {
    Md5,
    Sha1,
    Sha256,
}

impl HashAlgorithm {
    fn command(self) -> &'static str {
        match self {
            HashAlgorithm::Md5 => "md5sum",
            HashAlgorithm::Sha1 => "sha1sum",
            HashAlgorithm::Sha256 => "sha256sum",
        }
    }

    fn hasher(self) -> Box<dyn DynDigest + Send> {
        match self {
            HashAlgorithm::Md5 => Box::new(<md5::Md5 as sha2::Digest>::new()),
            HashAlgorithm::Sha1 => Box::new(<sha1::Sha1 as sha2::Digest>::new()),
            HashAlgorithm::Sha256 => Box::new(<sha2::Sha256 as sha2::Digest>::new()),
        }
    }
}

/// The command as logged: lossy UTF-8, escaped, at most 200 characters.
pub(crate) fn shown(data: &[u8]) -> String {
    String::from_utf8_lossy(data).chars().take(200).collect::<String>().escape_debug().to_string()
}

/// Parses an exec request; `Err` is the message for the client's stderr.
pub(crate) fn parse(data: &[u8]) -> Result<Command, String> {
    const ONLY: &str = "this server runs no shell: only `scp -t`/`scp -f` (legacy scp) and md5sum, sha1sum, \
                        sha256sum of one file are available; use SFTP";
    if data.len() > MAX_COMMAND_BYTES {
        return Err("command too long".to_owned());
    }
    let text = std::str::from_utf8(data).map_err(|_| "command is not UTF-8".to_owned())?;
    let words = shell_words(text).map_err(|e| format!("{e}; {ONLY}"))?;
    let Some((program, args)) = words.split_first() else {
        return Err(ONLY.to_owned());
    };
    match program.as_str() {
        "scp" => parse_scp(args),
        "md5sum" => parse_hash(HashAlgorithm::Md5, args),
        "sha1sum" => parse_hash(HashAlgorithm::Sha1, args),
        "sha256sum" => parse_hash(HashAlgorithm::Sha256, args),
        _ => Err(ONLY.to_owned()),
    }
}

fn parse_scp(args: &[String]) -> Result<Command, String> {
    let (mut sink, mut source, mut preserve, mut dir) = (false, false, false, false);
    let mut paths = Vec::new();
    let mut options_done = false;
    for arg in args {
        if options_done || !arg.starts_with('-') || arg == "-" {
            paths.push(arg.clone());
            continue;
        }
        if arg == "--" {
            options_done = true;
            continue;
        }
        for flag in arg[1..].chars() {
            match flag {
                't' => sink = true,
                'f' => source = true,
                'p' => preserve = true,
                'd' => dir = true,
                'v' => {}
                'r' => return Err("scp: folders cannot be copied (-r is not supported): copy files".to_owned()),
                other => return Err(format!("scp: option -{other} is not supported")),
            }
        }
    }
    let [path] = paths.as_slice() else {
        return Err("scp: exactly one path is needed".to_owned());
    };
    match (sink, source) {
        (true, false) => Ok(Command::ScpSink { target: path.clone(), target_is_dir: dir }),
        (false, true) => Ok(Command::ScpSource { path: path.clone(), preserve }),
        _ => Err("scp: one of -t or -f is needed".to_owned()),
    }
}

fn parse_hash(algorithm: HashAlgorithm, args: &[String]) -> Result<Command, String> {
    let name = algorithm.command();
    let mut paths = Vec::new();
    let mut options_done = false;
    for arg in args {
        if !options_done && arg == "--" {
            options_done = true;
        } else if !options_done && arg.starts_with('-') && arg != "-" {
            return Err(format!("{name}: option {arg} is not supported"));
        } else {
            paths.push(arg.clone());
        }
    }
    match paths.as_slice() {
        [] => Ok(Command::Hash { algorithm, path: None }),
        [p] if p == "-" => Ok(Command::Hash { algorithm, path: None }),
        [p] => Ok(Command::Hash { algorithm, path: Some(p.clone()) }),
        _ => Err(format!("{name}: one file at a time")),
    }
}

/// Splits a command line into words as a POSIX shell would, without
/// expanding anything: shell syntax outside quotes is an error.
pub(crate) fn shell_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    // A backslash-newline is a line continuation.
                    Some('\n') => {}
                    Some(next) => word.push(next),
                    None => return Err("unterminated escape".to_owned()),
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(ch) => word.push(ch),
                        None => return Err("unterminated quote".to_owned()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(ch @ ('"' | '\\' | '$' | '`')) => word.push(ch),
                            Some('\n') => {}
                            Some(ch) => {
                                word.push('\\');
                                word.push(ch);
                            }
                            None => return Err("unterminated quote".to_owned()),
                        },
                        Some('$' | '`') => return Err("shell expansions are not supported".to_owned()),
                        Some(ch) => word.push(ch),
                        None => return Err("unterminated quote".to_owned()),
                    }
                }
            }
            ';' | '|' | '&' | '<' | '>' | '(' | ')' | '$' | '`' | '\n' | '\r' => {
                return Err(format!("shell syntax `{}` is not supported", c.escape_debug()))
            }
            '*' | '?' | '[' => return Err("wildcards are not supported".to_owned()),
            '~' if !in_word => return Err("`~` is not supported; paths are relative to your root".to_owned()),
            '#' if !in_word => break,
            other => {
                in_word = true;
                word.push(other);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// The client's side of the channel: what it sends, buffered.
struct Io {
    channel: Channel<Msg>,
    buffer: VecDeque<u8>,
    eof: bool,
}

impl Io {
    /// Waits for more input; false at EOF.
    async fn fill(&mut self) -> bool {
        while self.buffer.is_empty() && !self.eof {
            match self.channel.wait().await {
                Some(ChannelMsg::Data { data }) => self.buffer.extend(data.iter()),
                Some(ChannelMsg::Eof) | Some(ChannelMsg::Close) | None => self.eof = true,
                Some(_) => {}
            }
        }
        !self.buffer.is_empty()
    }

    async fn byte(&mut self) -> Option<u8> {
        if !self.fill().await {
            return None;
        }
        self.buffer.pop_front()
    }

    /// One line without its `\n`; `Err` when over `max` bytes or cut by EOF.
    async fn line(&mut self, max: usize) -> Result<Vec<u8>, &'static str> {
        let mut line = Vec::new();
        loop {
            match self.byte().await {
                Some(b'\n') => return Ok(line),
                Some(b) if line.len() < max => line.push(b),
                Some(_) => return Err("line too long"),
                None => return Err("unexpected end of input"),
            }
        }
    }

    /// Up to `max` bytes already received (waiting for some if none are).
    async fn chunk(&mut self, max: usize) -> Option<Vec<u8>> {
        if !self.fill().await {
            return None;
        }
        let n = self.buffer.len().min(max);
        Some(self.buffer.drain(..n).collect())
    }

    async fn send(&self, bytes: impl Into<Vec<u8>>) -> bool {
        self.channel.data_bytes(bytes.into()).await.is_ok()
    }

    async fn stderr(&self, message: &str) {
        let _ = self.channel.extended_data_bytes(1, format!("{message}\n").into_bytes()).await;
    }

    async fn finish(self, status: u32) {
        let _ = self.channel.exit_status(status).await;
        let _ = self.channel.eof().await;
        let _ = self.channel.close().await;
    }
}

/// Runs one exec command on its channel, then reports its exit status and
/// closes the channel.
pub(crate) async fn run(command: Result<Command, String>, channel: Channel<Msg>, mut fs: AccountFs) {
    let mut io = Io { channel, buffer: VecDeque::new(), eof: false };
    let status = match command {
        Err(message) => {
            io.stderr(&message).await;
            1
        }
        Ok(Command::ScpSink { target, target_is_dir }) => scp_sink(&mut io, &mut fs, &target, target_is_dir).await,
        Ok(Command::ScpSource { path, preserve }) => scp_source(&mut io, &mut fs, &path, preserve).await,
        Ok(Command::Hash { algorithm, path }) => hash(&mut io, &mut fs, algorithm, path.as_deref()).await,
    };
    io.finish(status).await;
}

fn message(reply: &russh_sftp::server::StatusReply) -> String {
    reply.error_message.clone().unwrap_or_else(|| reply.status_code.to_string())
}

/// `scp -t`: the sink side of the legacy protocol (see OpenSSH's scp.c `sink()`).
async fn scp_sink(io: &mut Io, fs: &mut AccountFs, target: &str, target_is_dir: bool) -> u32 {
    let is_dir = fs.stat_path(target).is_ok_and(|a| a.is_dir());
    if target_is_dir && !is_dir {
        let _ = io.send(format!("\x02scp: {target}: Not a directory\n")).await;
        return 1;
    }
    let mut failed = false;
    if !io.send([0u8]).await {
        return 1;
    }
    loop {
        let Some(kind) = io.byte().await else { break };
        let line = match io.line(MAX_SCP_LINE).await {
            Ok(line) => String::from_utf8_lossy(&line).into_owned(),
            Err(e) => {
                let _ = io.send(format!("\x02scp: protocol error: {e}\n")).await;
                return 1;
            }
        };
        match kind {
            // Times (-p): accepted, not applied (as SETSTAT over SFTP).
            b'T' => {
                let _ = io.send([0u8]).await;
            }
            b'C' => match scp_receive_file(io, fs, &line, target, is_dir).await {
                Received::Whole => {}
                Received::Failed => failed = true,
                Received::Stop => return 1,
            },
            b'D' => {
                fs.exec_refused("scp upload", target, "folders cannot be uploaded");
                let _ = io.send("\x02scp: folders cannot be uploaded: copy files\n").await;
                return 1;
            }
            b'E' => {
                let _ = io.send([0u8]).await;
            }
            // The client's own warning (1) or fatal error (2).
            1 => failed = true,
            2 => return 1,
            _ => {
                let _ = io.send("\x02scp: protocol error\n").await;
                return 1;
            }
        }
    }
    u32::from(failed)
}

/// What became of one file of an `scp -t` upload.
enum Received {
    /// Published.
    Whole,
    /// Refused or failed (the client was told); the next file may follow.
    Failed,
    /// The protocol cannot go on.
    Stop,
}

/// Receives one file of an `scp -t` upload, after its `C` line, into the jail.
async fn scp_receive_file(io: &mut Io, fs: &mut AccountFs, line: &str, target: &str, is_dir: bool) -> Received {
    let max = fs.max_upload_bytes();
    let Some((size, name)) = parse_c_line(line) else {
        let _ = io.send("\x02scp: protocol error: bad file line\n").await;
        return Received::Stop;
    };
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        let _ = io.send(format!("\x02scp: {}: invalid file name\n", name.escape_debug())).await;
        return Received::Stop;
    }
    let path = if is_dir { format!("{}/{name}", target.trim_end_matches('/')) } else { target.to_owned() };
    if size > max {
        fs.exec_refused("scp upload", &path, "File too large: over the maximum upload size");
        let _ = io.send(format!("\x01scp: {path}: File too large: over the maximum upload size\n")).await;
        return Received::Failed;
    }
    let handle = match fs.exec_open(&path, true).await {
        Ok(handle) => handle,
        Err(e) => {
            let _ = io.send(format!("\x01scp: {path}: {}\n", message(&e))).await;
            return Received::Failed;
        }
    };
    if !io.send([0u8]).await {
        fs.exec_discard(&handle);
        return Received::Stop;
    }
    let mut error = None;
    let mut offset = 0u64;
    while offset < size {
        let want = usize::try_from((size - offset).min(256 * 1024)).unwrap_or(256 * 1024);
        let Some(chunk) = io.chunk(want).await else {
            // The client went away mid-file (a short read): nothing is published.
            fs.exec_discard(&handle);
            return Received::Stop;
        };
        if error.is_none() {
            if let Err(e) = fs.exec_write(&handle, offset, &chunk) {
                error = Some(message(&e));
            }
        }
        offset += chunk.len() as u64;
    }
    // The client ends each file with one status byte (0: sent whole).
    match io.byte().await {
        Some(0) => {}
        Some(_) => {
            let _ = io.line(MAX_SCP_LINE).await;
            error.get_or_insert_with(|| "the client reported an error while sending".to_owned());
        }
        None => {
            // The channel ended before the client said the file was whole.
            fs.exec_discard(&handle);
            return Received::Stop;
        }
    }
    if error.is_some() {
        // A transfer the client declared failed (its local read failed: the
        // data is padding) or one a write failed on is never published.
        fs.exec_discard(&handle);
    } else if let Err(e) = fs.exec_close(&handle).await {
        error = Some(message(&e));
    }
    match error {
        None => {
            let _ = io.send([0u8]).await;
            Received::Whole
        }
        Some(e) => {
            let _ = io.send(format!("\x01scp: {path}: {e}\n")).await;
            Received::Failed
        }
    }
}

/// `C0644 1234 name` (the `C` already read): (size, name).
fn parse_c_line(line: &str) -> Option<(u64, String)> {
    let mut parts = line.splitn(3, ' ');
    let mode = parts.next()?;
    if mode.len() != 4 || !mode.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    let size = parts.next()?.parse().ok()?;
    let name = parts.next()?.to_owned();
    Some((size, name))
}

/// Reads the sink's answer to one step: 0 is OK, 1 and 2 carry a message.
async fn scp_ack(io: &mut Io) -> Result<(), String> {
    match io.byte().await {
        Some(0) => Ok(()),
        Some(1 | 2) => {
            let line = io.line(MAX_SCP_LINE).await.unwrap_or_default();
            Err(String::from_utf8_lossy(&line).into_owned())
        }
        _ => Err("protocol error".to_owned()),
    }
}

/// `scp -f`: the source side (see OpenSSH's scp.c `source()`), one file.
async fn scp_source(io: &mut Io, fs: &mut AccountFs, path: &str, preserve: bool) -> u32 {
    // The sink starts with a 0 byte.
    if scp_ack(io).await.is_err() {
        return 1;
    }
    let attrs = match fs.stat_path(path) {
        Ok(attrs) if attrs.is_dir() => {
            fs.exec_refused("scp download", path, "is a folder");
            let _ = io.send(format!("\x01scp: {path}: not a regular file\n")).await;
            return 1;
        }
        Ok(attrs) => attrs,
        Err(e) => {
            fs.exec_refused("scp download", path, &message(&e));
            let _ = io.send(format!("\x01scp: {path}: No such file or directory\n")).await;
            return 1;
        }
    };
    let handle = match fs.exec_open(path, false).await {
        Ok(handle) => handle,
        Err(e) => {
            let _ = io.send(format!("\x01scp: {path}: {}\n", message(&e))).await;
            return 1;
        }
    };
    let status = send_file(io, fs, &handle, path, &attrs, preserve).await;
    let _ = fs.exec_close(&handle).await;
    status
}

async fn send_file(
    io: &mut Io,
    fs: &mut AccountFs,
    handle: &str,
    path: &str,
    attrs: &russh_sftp::protocol::FileAttributes,
    preserve: bool,
) -> u32 {
    let size = attrs.size.unwrap_or(0);
    if preserve {
        let (mtime, atime) = (attrs.mtime.unwrap_or(0), attrs.atime.unwrap_or(0));
        if !io.send(format!("T{mtime} 0 {atime} 0\n")).await || scp_ack(io).await.is_err() {
            return 1;
        }
    }
    let name = path.rsplit('/').next().unwrap_or(path);
    if !io.send(format!("C0644 {size} {name}\n")).await || scp_ack(io).await.is_err() {
        return 1;
    }
    let mut offset = 0u64;
    while offset < size {
        let want = u32::try_from((size - offset).min(u64::from(CHUNK))).unwrap_or(CHUNK);
        let data = match fs.exec_read(handle, offset, want) {
            Ok(data) if !data.is_empty() => data,
            // The file shrank while being sent: pad as OpenSSH does, then fail.
            Ok(_) | Err(_) => {
                let rest = usize::try_from(size - offset).unwrap_or(0);
                let _ = io.send(vec![0u8; rest]).await;
                let _ = io.send(format!("\x01scp: {path}: file changed while it was read\n")).await;
                return 1;
            }
        };
        offset += data.len() as u64;
        if !io.send(data).await {
            return 1;
        }
    }
    if !io.send([0u8]).await {
        return 1;
    }
    u32::from(scp_ack(io).await.is_err())
}

/// `md5sum PATH` and friends: one file in the jail, or standard input.
async fn hash(io: &mut Io, fs: &mut AccountFs, algorithm: HashAlgorithm, path: Option<&str>) -> u32 {
    let command = algorithm.command();
    let mut hasher = algorithm.hasher();
    let max = fs.max_upload_bytes();
    let Some(path) = path else {
        let mut total = 0u64;
        while let Some(chunk) = io.chunk(CHUNK as usize).await {
            total += chunk.len() as u64;
            if total > max {
                io.stderr(&format!("{command}: -: input too large")).await;
                return 1;
            }
            hasher.update(&chunk);
        }
        let _ = io.send(format!("{}  -\n", hex::encode(hasher.finalize()))).await;
        return 0;
    };
    match fs.stat_path(path) {
        Ok(attrs) if attrs.is_dir() => {
            fs.exec_refused(command, path, "is a folder");
            io.stderr(&format!("{command}: {path}: Is a directory")).await;
            return 1;
        }
        Ok(_) => {}
        Err(e) => {
            fs.exec_refused(command, path, &message(&e));
            io.stderr(&format!("{command}: {path}: No such file or directory")).await;
            return 1;
        }
    }
    let handle = match fs.exec_open(path, false).await {
        Ok(handle) => handle,
        Err(e) => {
            io.stderr(&format!("{command}: {path}: {}", message(&e))).await;
            return 1;
        }
    };
    let mut offset = 0u64;
    let result = loop {
        match fs.exec_read(&handle, offset, CHUNK) {
            Ok(data) if data.is_empty() => break Ok(()),
            Ok(data) => {
                offset += data.len() as u64;
                hasher.update(&data);
            }
            Err(e) => break Err(message(&e)),
        }
        // Hashing a big file must not hold the runtime thread.
        tokio::task::yield_now().await;
    };
    let _ = fs.exec_close(&handle).await;
    if let Err(e) = result {
        io.stderr(&format!("{command}: {path}: {e}")).await;
        return 1;
    }
    let _ = io.send(checksum_line(&hex::encode(hasher.finalize()), path)).await;
    0
}

/// `<hex>  <name>\n` as coreutils prints it: a name with a backslash or a
/// newline is escaped and the line starts with a backslash.
fn checksum_line(hex: &str, name: &str) -> String {
    if name.contains(['\\', '\n']) {
        let escaped = name.replace('\\', "\\\\").replace('\n', "\\n");
        format!("\\{hex}  {escaped}\n")
    } else {
        format!("{hex}  {name}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_scp_commands_parse_with_their_flags() {
        assert_eq!(
            parse(b"scp -t /customers/x.csv").unwrap(),
            Command::ScpSink { target: "/customers/x.csv".into(), target_is_dir: false }
        );
        assert_eq!(
            parse(b"scp -v -p -d -t -- /customers/").unwrap(),
            Command::ScpSink { target: "/customers/".into(), target_is_dir: true }
        );
        assert_eq!(
            parse(b"scp -pf '/outbox/May results.csv'").unwrap(),
            Command::ScpSource { path: "/outbox/May results.csv".into(), preserve: true }
        );
        assert!(parse(b"scp -r -t /customers").unwrap_err().contains("-r"));
        assert!(parse(b"scp -t a b").is_err());
        assert!(parse(b"scp /customers").is_err());
    }

    #[test]
    fn checksum_commands_take_one_path_or_standard_input() {
        assert_eq!(parse(b"md5sum").unwrap(), Command::Hash { algorithm: HashAlgorithm::Md5, path: None });
        assert_eq!(
            parse(b"sha1sum /customers/a\\ b.csv").unwrap(),
            Command::Hash { algorithm: HashAlgorithm::Sha1, path: Some("/customers/a b.csv".into()) }
        );
        assert_eq!(
            parse(b"sha256sum \"/outbox/x.csv\"").unwrap(),
            Command::Hash { algorithm: HashAlgorithm::Sha256, path: Some("/outbox/x.csv".into()) }
        );
        assert!(parse(b"md5sum a b").is_err());
    }

    #[test]
    fn anything_shell_like_is_refused() {
        for bad in [
            "echo ${ShellId}%ComSpec%",
            "md5sum /x; rm -rf /",
            "md5sum $(id)",
            "md5sum `id`",
            "echo 'abc' | md5sum",
            "md5sum /customers/*.csv",
            "md5sum > /x",
            "sh -c id",
            "",
            "scp -t 'unterminated",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(parse(&vec![b'a'; MAX_COMMAND_BYTES + 1]).is_err());
    }

    #[test]
    fn shell_words_undo_quotes_and_escapes_as_rclone_sends_them() {
        assert_eq!(shell_words(r#"a 'b c' "d \"e\"" f\ g"#).unwrap(), ["a", "b c", "d \"e\"", "f g"]);
        assert_eq!(shell_words("x '\n' y").unwrap(), ["x", "\n", "y"]);
        assert_eq!(shell_words("").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn a_checksum_line_looks_like_coreutils() {
        assert_eq!(checksum_line("abc", "/outbox/a.csv"), "abc  /outbox/a.csv\n");
        assert_eq!(checksum_line("abc", "a\\b\nc"), "\\abc  a\\\\b\\nc\n");
    }

    #[test]
    fn a_c_line_parses_mode_size_and_name() {
        assert_eq!(parse_c_line("0644 12 a b.csv"), Some((12, "a b.csv".to_owned())));
        assert_eq!(parse_c_line("644 12 a"), None);
        assert_eq!(parse_c_line("0644 x a"), None);
    }
}
