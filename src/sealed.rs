//! Sealing the `Into*` traits: only this crate implements them, for
//! names and for function values of the right shape (a user type could
//! not produce what they return anyway). The kind parameter keeps the
//! impls of different traits for the same type apart.

/// Implemented for exactly the types that implement the sealed trait of
/// kind `Kind`.
pub trait Sealed<Kind> {}

/// [`crate::IntoRun`].
#[derive(Debug)]
pub enum Run {}
/// [`crate::IntoInit`].
#[derive(Debug)]
pub enum Init {}
/// [`crate::rpc::IntoRpc`] (with its marker).
#[derive(Debug)]
pub struct Rpc<Marker>(std::marker::PhantomData<Marker>);
/// [`crate::rpc::IntoRpcInit`].
#[derive(Debug)]
pub enum RpcInit {}
/// [`crate::rpc::IntoRpcDone`].
#[derive(Debug)]
pub enum RpcDone {}
