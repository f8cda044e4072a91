//! What crosses between the host and a worker, and how: the frames and
//! their types, the handshake, the sandbox policy the host sends, and the
//! connections. Both sides use it; it knows nothing of either.
//!
//! * `protocol`: the frames between host and worker, and the handshake;
//! * `policy`: what one worker's sandbox allows, as the handshake carries
//!   it;
//! * `link`: the connections between host and worker, and how each
//!   reaches the worker (passed as a descriptor on Unix, dialled on
//!   loopback with a token on Windows).

pub(crate) mod link;
pub(crate) mod policy;
pub(crate) mod protocol;
