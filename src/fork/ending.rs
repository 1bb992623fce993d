//! Why a process is gone or silent: what it said before it went, how it
//! ended, what its template said, and what state the kernel shows for a
//! process that does not answer.

use super::link::{EXIT_GRACE, Link, lock};
use crate::error::{Error, Origin, ProcessName};
use crate::proto::{self, Reply};

impl Link {
    /// The process closed its socket while `doing`: find out why.
    pub(super) fn explain_end(&mut self, doing: &str) -> Error {
        // What did it say before it went?
        while let Some(transport) = &self.transport {
            let budget = self.reply_budget();
            match self.replies.next_with_sender(transport, budget) {
                Ok(Some((reply, sender))) => match self.note(reply, sender) {
                    Ok(reply @ (Reply::Error { .. } | Reply::Started(_))) => {
                        return self.unexpected(reply);
                    }
                    Ok(Reply::Pid(_) | Reply::InSync(_)) => {}
                    Err(error) => return error,
                },
                Err(proto::ReadError::Protocol(e)) => return self.protocol_error(e),
                Ok(None) | Err(proto::ReadError::Io(_)) => break,
            }
        }
        self.broken = Some(format!("the process ended before {doing}"));
        let ending = self.ending(EXIT_GRACE);
        let cause = if self.name.pid.is_none() {
            self.template.upgrade().and_then(|t| lock(&t).death_note())
        } else {
            None
        };
        Error::Ended {
            process: self.name.clone(),
            doing: doing.to_owned(),
            ending,
            cause,
        }
    }

    /// If this (template) process has ended, why; `None` while it lives.
    pub(super) fn death_note(&mut self) -> Option<String> {
        if let Some(note) = &self.death {
            return Some(note.clone());
        }
        // Read only what is already waiting: a live template has nothing
        // to say but its pid, and must not be waited for.
        let mut said = None;
        let ended = loop {
            let transport = self.transport.as_ref()?;
            let buffered = match self.replies.take_with_sender() {
                Ok(Some(reply)) => Some(reply),
                Ok(None) => None,
                Err(_) => break true,
            };
            if buffered.is_none() && !transport.is_readable_now() {
                // Nothing more: alive, unless it said why it is leaving (a
                // serving process exits after an `E` frame).
                break said.is_some();
            }
            let budget = self.reply_budget();
            let next = match buffered {
                Some(reply) => Ok(Some(reply)),
                None => self.replies.next_with_sender(transport, budget),
            };
            match next {
                Ok(Some((Reply::Pid(pid), sender))) => {
                    let _ = self.claim(pid, sender, false);
                }
                Ok(Some((Reply::Error { kind, message }, _))) => {
                    said = Some(format!("{kind}: {message}"))
                }
                Ok(Some((Reply::Started(_) | Reply::InSync(_), _))) => {}
                Ok(None) | Err(_) => break true,
            }
        };
        if !ended {
            return None;
        }
        let ending = self.ending(EXIT_GRACE);
        let who = ProcessName {
            pid: self.name.pid,
            origin: self.name.origin,
        };
        let note = match said {
            Some(said) => format!("its template, {who}, refused a command: {said}"),
            None => format!("its template, {who}, exited{ending}"),
        };
        self.death = Some(note.clone());
        Some(note)
    }

    /// The process did not answer before the deadline while `doing`: say
    /// what state it (and its template) is in.
    pub(super) fn timeout_error(&self, doing: &str) -> Error {
        let mut state = String::new();
        if self.far.is_some() {
            // Its pid is not a process of this machine.
            if let Some(far) = self.ending(std::time::Duration::ZERO).1 {
                state.push_str(&format!("; it runs {far}"));
            }
        } else if let Some(pid) = self.name.pid {
            match crate::process::describe_state(pid) {
                Some(words) => state.push_str(&format!("; it is {words}")),
                None => state.push_str("; it is gone"),
            }
        }
        if let Origin::Fork {
            template: Some(template),
        } = self.name.origin
        {
            match crate::process::describe_state(template) {
                Some(words) => state.push_str(&format!("; its template {template} is {words}")),
                None => state.push_str(&format!("; its template {template} is gone")),
            }
        }
        Error::Timeout {
            process: self.name.clone(),
            doing: doing.to_owned(),
            timeout: self.timeout.unwrap_or_default(),
            state,
        }
    }
}
