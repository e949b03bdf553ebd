//! Pseudo-terminal helpers shared by the interactive command tests (`use crate::pty;`).

use rexpect::process::WaitStatus;
use rexpect::session::PtySession;

/// Waits for `prompt`, then types `answer` and Enter (a raw-mode terminal sends `\r`).
pub(crate) fn answer(session: &mut PtySession, prompt: &str, answer: &str, transcript: &mut String) {
    expect(session, prompt, transcript);
    type_text(session, answer);
    type_text(session, "\r");
}

/// Waits for `text` and records everything up to it (and it) in `transcript`.
pub(crate) fn expect(session: &mut PtySession, text: &str, transcript: &mut String) {
    let before =
        session.exp_string(text).unwrap_or_else(|e| panic!("waiting for {text:?}: {e}\nafter:\n{}", plain(transcript)));
    transcript.push_str(&before);
    transcript.push_str(text);
}

/// Types like a (fast) person: one key at a time. A whole line in one write can reach a
/// selection list before it has redrawn for the previous key.
pub(crate) fn type_text(session: &mut PtySession, text: &str) {
    for c in text.chars() {
        session.send(c.encode_utf8(&mut [0; 4])).expect("type");
        session.flush().expect("flush");
        std::thread::sleep(std::time::Duration::from_millis(15));
    }
}

/// The screen text without ANSI escape sequences.
pub(crate) fn plain(text: &str) -> String {
    // rexpect hands over each byte as one `char`; put the UTF-8 back together.
    let bytes: Vec<u8> = text.chars().map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?')).collect();
    let text = String::from_utf8_lossy(&bytes);
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() || c == '~' {
                        break;
                    }
                }
            }
            continue;
        }
        if c != '\r' {
            out.push(c);
        }
    }
    out
}

/// The command's exit code, once it has exited.
pub(crate) fn exit_code(session: &PtySession) -> i32 {
    match session.process().wait().expect("wait") {
        WaitStatus::Exited(_, code) => code,
        other => panic!("the command did not exit normally: {other:?}"),
    }
}
