//! The Kubernetes remote-command channel protocol over WebSocket
//! (`v5.channel.k8s.io`, and `v4.channel.k8s.io` which lacks the close
//! signal), as kubectl ≥ 1.30 speaks it for `exec`: every binary message is
//! one channel byte followed by data — 0 stdin, 1 stdout, 2 stderr, 3 the
//! error channel (one `metav1.Status` JSON when the command ends), 4
//! terminal resize — and in v5 a message `[255, n]` says the peer closed
//! its side of channel `n` (kubectl sends `[255, 0]` at the end of stdin).
//!
//! This module is the framing and the status documents; the node server
//! ([`crate::server`]) runs the command and moves the bytes.

use serde_json::{Value, json};

/// The protocols the node serves, most preferred first.
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// Standard input (client → server).
pub const STDIN: u8 = 0;
/// Standard output (server → client).
pub const STDOUT: u8 = 1;
/// Standard error (server → client).
pub const STDERR: u8 = 2;
/// The error channel: the command's final `Status`.
pub const ERROR: u8 = 3;
/// Terminal resize events (client → server, with a TTY).
pub const RESIZE: u8 = 4;
/// v5: "I closed my side of channel `n`" (`[255, n]`).
pub const CLOSE: u8 = 255;

/// One binary message: `channel` then `data`.
#[must_use]
pub fn frame(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 1);
    out.push(channel);
    out.extend_from_slice(data);
    out
}

/// What a client message asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage<'a> {
    /// Bytes for the command's standard input.
    Stdin(&'a [u8]),
    /// The client finished channel `n` (stdin: close the command's input).
    Close(u8),
    /// A terminal size (JSON `{"Width":…,"Height":…}`); ignored without a TTY.
    Resize(&'a [u8]),
    /// Something the server does not act on (unknown channel, empty message).
    Ignored,
}

/// Reads one binary message from the client.
#[must_use]
pub fn parse(message: &[u8]) -> ClientMessage<'_> {
    match message {
        [STDIN, data @ ..] => ClientMessage::Stdin(data),
        [CLOSE, channel, ..] => ClientMessage::Close(*channel),
        [RESIZE, data @ ..] => ClientMessage::Resize(data),
        _ => ClientMessage::Ignored,
    }
}

/// The error-channel document for a command that exited with `code`, as
/// the kubelet writes it (a `metav1.Status`): `Success`, or `Failure` with
/// reason `NonZeroExitCode` and the code as cause `ExitCode` (kubectl exits
/// with that code).
#[must_use]
pub fn exit_status(argv: &[String], code: i32) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "reason": "NonZeroExitCode",
        "message": format!(
            "command terminated with non-zero exit code: error executing command {argv:?}, exit code {code}"
        ),
        // metav1.StatusCause's `Type` is the JSON field "reason".
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// The error-channel document for a command that could not be run (not in
/// the image, container gone): an `InternalError`, which kubectl prints as
/// `error: Internal error occurred: …` and exits 1, like Kubernetes does.
#[must_use]
pub fn internal_error(message: &str) -> Value {
    let why = format!("error executing command in container: {message}");
    json!({
        "metadata": {},
        "status": "Failure",
        "reason": "InternalError",
        "code": 500,
        "message": format!("Internal error occurred: {why}"),
        "details": {"causes": [{"message": why}]},
    })
}

/// `status` as the error channel's message.
#[must_use]
pub fn status_frame(status: &Value) -> Vec<u8> {
    frame(ERROR, &serde_json::to_vec(status).unwrap_or_default())
}

/// The message of a runc error line (`time=… level=error msg="…"`), or the
/// text itself when it is not one.
#[must_use]
pub fn runc_message(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    match line.find("msg=\"") {
        Some(start) => {
            let rest = &line[start + 5..];
            let end = rest.rfind('"').unwrap_or(rest.len());
            rest[..end].replace("\\\"", "\"").replace("\\\\", "\\")
        }
        None => line.trim().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_the_channel_first() {
        assert_eq!(frame(STDOUT, b"hi\n"), b"\x01hi\n");
        assert_eq!(frame(STDERR, b""), [2]);
    }

    #[test]
    fn client_messages() {
        assert_eq!(parse(b"\x00abc"), ClientMessage::Stdin(b"abc"));
        assert_eq!(parse(&[255, 0]), ClientMessage::Close(0));
        assert_eq!(
            parse(b"\x04{\"Width\":80,\"Height\":24}"),
            ClientMessage::Resize(b"{\"Width\":80,\"Height\":24}")
        );
        assert_eq!(parse(&[]), ClientMessage::Ignored);
        assert_eq!(parse(&[7, 1]), ClientMessage::Ignored);
    }

    #[test]
    fn non_zero_exit_is_what_kubectl_decodes() -> anyhow::Result<()> {
        let argv = vec!["sh".to_owned(), "-c".to_owned(), "exit 3".to_owned()];
        let msg = status_frame(&exit_status(&argv, 3));
        assert_eq!(msg[0], ERROR);
        let doc: Value = serde_json::from_slice(&msg[1..])?;
        assert_eq!(doc["status"], "Failure");
        assert_eq!(doc["reason"], "NonZeroExitCode");
        // metav1.StatusCause's type is the JSON field "reason".
        assert_eq!(
            doc["details"]["causes"],
            json!([{"reason": "ExitCode", "message": "3"}])
        );
        assert_eq!(doc["metadata"], json!({}));
        let ok: Value = serde_json::from_slice(&status_frame(&exit_status(&argv, 0))[1..])?;
        assert_eq!(ok, json!({"metadata": {}, "status": "Success"}));
        Ok(())
    }

    #[test]
    fn start_failures_are_internal_errors() {
        let line = br#"time="2026-01-01T00:00:00Z" level=error msg="exec failed: unable to start container process: exec: \"nope\": executable file not found in $PATH""#;
        let message = runc_message(line);
        assert_eq!(
            message,
            r#"exec failed: unable to start container process: exec: "nope": executable file not found in $PATH"#
        );
        let doc = internal_error(&message);
        assert_eq!(doc["reason"], "InternalError");
        assert!(doc["message"].as_str().is_some_and(|m| m.starts_with(
            "Internal error occurred: error executing command in container: exec failed"
        )));
        assert_eq!(runc_message(b"plain failure\n"), "plain failure");
    }
}
