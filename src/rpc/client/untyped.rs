//! [`UntypedRpc`]: a handle whose requests arrive already encoded, for the
//! worker pool, which encodes a request once, may send the same bytes to
//! another worker when the first one died before running it, and keeps
//! workers of one kind without their event type.

use std::future::Future;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use super::core::Core;
use super::handle::{Rpc, Shared};
use super::pending::PendingCall;
use crate::rpc::codec::Codec;
use crate::rpc::delivery::Outcome;
use crate::rpc::error::Error;

/// An RPC handle without its types (crate-internal).
pub(crate) struct UntypedRpc {
    core: Arc<Core>,
    /// Dropping it (the last holder) lets the child finish and exit.
    _shared: Arc<Shared>,
}

impl<Req, Rep, Ev> Rpc<Req, Rep, Ev> {
    /// Forgets the types.
    pub(crate) fn into_untyped(self) -> UntypedRpc {
        UntypedRpc {
            core: self.core,
            _shared: self.shared,
        }
    }
}

impl UntypedRpc {
    /// The codec its messages use.
    pub(crate) fn codec(&self) -> Codec {
        self.core.codec
    }

    /// Queues an encoded request; the caller waits for it blocking.
    pub(crate) fn submit(&self, bytes: &[u8], fds: Vec<OwnedFd>) -> Result<SubmittedCall, Error> {
        self.core.submit_encoded(bytes, fds).map(SubmittedCall)
    }

    /// Queues an encoded request for an async caller: a driver task (in the
    /// current runtime) reads the reply.
    #[cfg(feature = "tokio")]
    pub(crate) fn submit_async(
        &self,
        bytes: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<SubmittedCall, Error> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::NoRuntime);
        }
        let call = self.core.submit_encoded(bytes, fds)?;
        self.core.clone().ensure_driver();
        Ok(SubmittedCall(call))
    }

    /// The child, for errors.
    pub(crate) fn process_name(&self) -> crate::error::ProcessName {
        self.core.process_name()
    }

    /// A watch on the child that does not keep it serving.
    pub(crate) fn watch(&self) -> RpcWatch {
        RpcWatch {
            core: self.core.clone(),
        }
    }

    /// The child's pid, if it has said it.
    pub(crate) fn known_pid(&self) -> Option<u32> {
        self.core.lock().link.name().pid
    }

    /// Kills the child and closes the handle; outstanding calls fail with
    /// [`Error::Killed`] saying `why`.
    pub(crate) fn kill(&self, why: String) -> Result<(), Error> {
        self.core.kill_child(why)
    }

    /// For a child that runs one call at a time: whether call `id` is the
    /// one it runs now (the oldest delivered call without a reply).
    pub(crate) fn is_running(&self, id: u32) -> bool {
        if !self.core.sequential {
            return false;
        }
        let oldest = self.core.lock().running_call();
        oldest.is_some_and(|(_, oldest)| oldest == id)
    }
}

/// Watches an RPC child without keeping it serving: its pid and process
/// handle, also after every handle was dropped.
pub(crate) struct RpcWatch {
    core: Arc<Core>,
}

impl RpcWatch {
    /// Waits (blocking, at most until `deadline`) for the child's pid.
    pub(crate) fn await_pid(&self, deadline: Instant) -> Result<u32, Error> {
        self.core.await_pid(deadline)?;
        self.core.said_pid()
    }

    /// The child's process handle, once its pid is known.
    pub(crate) fn process(&self) -> Option<crate::Process> {
        self.core.lock().link.process().cloned()
    }

    /// For a child on another machine: `Some` once it is gone (with its
    /// wait status when its far side reported it).
    pub(crate) fn far_gone(&self) -> Option<Option<std::process::ExitStatus>> {
        self.core.lock().link.far_gone()
    }

    /// For a child that has exited: reads what it sent last (at most until
    /// `deadline`) and returns the message its server gave up with, if it
    /// did (a failing `init`, an unknown function).
    pub(crate) fn last_words(&self, deadline: Instant) -> Option<String> {
        let closed =
            |state: &super::core::State| matches!(state.phase, super::core::Phase::Closed(_));
        let _ = self.core.pump_or_wait(Some(deadline), &closed);
        match &self.core.lock().phase {
            super::core::Phase::Closed(Some(Error::Server { message, .. })) => {
                Some(message.clone())
            }
            _ => None,
        }
    }
}

/// A request sent (or queued) to one child; dropping it cancels the call.
pub(crate) struct SubmittedCall(PendingCall);

impl SubmittedCall {
    /// The call's id on its connection.
    pub(crate) fn id(&self) -> u32 {
        self.0.id
    }

    /// Runs `hook` when the outcome arrives, where it is read; returns it
    /// back if the outcome is already here.
    pub(crate) fn on_settled(
        &self,
        hook: crate::rpc::delivery::SettledHook,
    ) -> Option<crate::rpc::delivery::SettledHook> {
        self.0.slot.on_settled(hook)
    }

    /// Waits (blocking) for the outcome, at most until `deadline`: `None`
    /// when it passes first (the call is left as it is).
    pub(crate) fn wait_until(&self, deadline: Option<Instant>) -> Option<Outcome> {
        self.0.slot.wait_blocking();
        loop {
            if let Some(outcome) = self.0.take() {
                return Some(outcome);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return None;
            }
            let slot = self.0.slot.clone();
            if let Err(error) = self.0.core.pump_or_wait(deadline, &move |_| slot.is_done()) {
                return Some(self.0.take().unwrap_or(Err(error)));
            }
        }
    }
}

impl Future for SubmittedCall {
    type Output = Outcome;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        Pin::new(&mut self.0).poll(cx)
    }
}
